"""Figures tell the truth: every estimator drawn in its one colour, masked bins left out, unreliable
estimates marked, outliers do not hide the rest. Built on small synthetic datasets in the summary's
contract (analysis/fes_profiles.nc, fes_surface.nc, summary.nc)."""

import numpy as np
import pytest
import xarray as xr
from matplotlib.collections import QuadMesh
from matplotlib.colors import to_rgb

from boltzflow.benchmark_files import cpu_seconds, training_md_seconds
from boltzflow.estimator_table import ESTIMATORS, label
from boltzflow.plots import (
    QUADRATURE,
    UNRELIABLE_COLOUR,
    cost_figure,
    estimator_colour,
    estimator_names,
    free_energy_profiles,
    free_energy_surfaces,
    log_weight_histogram,
    score_training_curves,
    training_curves,
)
from boltzflow.report_table import summary_html
from boltzflow.settings import FigureSettings

NAMES = estimator_names()
MODELS = [name for name in NAMES if name not in ("mbar", QUADRATURE)]
UNRELIABLE = "score_perturbation"
SETTINGS = FigureSettings(min_bin_effective_samples=5.0)
EDGES = np.linspace(-2.0, 2.0, 21)
CENTRES = 0.5 * (EDGES[1:] + EDGES[:-1])
WIDTH = EDGES[1] - EDGES[0]


def exact_profile() -> np.ndarray:
    """F = −ln(p / bin width) of the normalized density ∝ exp(−(x² − 1)²) binned on EDGES (midpoint rule)."""
    p = np.exp(-((CENTRES**2 - 1) ** 2)) * WIDTH
    return -np.log(p / p.sum() / WIDTH)


def profiles_dataset() -> xr.Dataset:
    f = np.tile(exact_profile(), (len(NAMES), 1))
    n_eff = np.full_like(f, 100.0)
    n_eff[NAMES.index(QUADRATURE)] = np.inf
    spike = NAMES.index("flow_mcmc")
    f[spike, 3], n_eff[spike, 3] = 35.0, 1.0  # a bin of a handful of samples: a spike that must not be drawn
    return xr.Dataset(
        {"F_x": (("estimator", "x"), f, {"units": "kT", "long_name": "F"}),
         "dF_x": (("estimator", "x"), np.full_like(f, 0.1), {"units": "kT", "long_name": "dF"}),
         "n_eff_x": (("estimator", "x"), n_eff, {"units": "1", "long_name": "effective samples"})},
        coords={"estimator": NAMES, "x": ("x", CENTRES, {"units": "nm"}), "x_edges": ("x_edge", EDGES)})


def surface_dataset() -> xr.Dataset:
    f = exact_profile()[:, None] + exact_profile()[None, :]
    values = np.tile(f, (len(NAMES), 1, 1))
    n_eff = np.full_like(values, 50.0)
    n_eff[NAMES.index("flow_smc"), :10, :] = 2.0  # few distinct particles: half the plane is not drawn
    return xr.Dataset(
        {"F_xy": (("estimator", "x", "y"), values, {"units": "kT", "long_name": "F"}),
         "n_eff_xy": (("estimator", "x", "y"), n_eff, {"units": "1", "long_name": "effective samples"})},
        coords={"estimator": NAMES, "x": ("x", CENTRES, {"units": "nm"}), "y": ("y", CENTRES, {"units": "nm"}),
                "x_edges": ("x_edge", EDGES), "y_edges": ("y_edge", EDGES)})


def summary_dataset() -> xr.Dataset:
    states = ["left", "right"]
    shape = (len(NAMES), len(states))
    delta_f = np.zeros(shape)
    delta_f[:, 1] = 0.5
    delta_f[NAMES.index(UNRELIABLE), 1] = 3.0
    reliable = np.ones(shape, dtype=np.int8)
    reliable[NAMES.index(UNRELIABLE), 1] = 0
    reason = np.full(shape, "", dtype=object)
    reason[NAMES.index(UNRELIABLE), 1] = "Pareto k > 0.7"
    per_estimator = np.linspace(0.1, 0.9, len(NAMES))
    return xr.Dataset(
        {"delta_f": (("estimator", "state"), delta_f), "delta_f_err": (("estimator", "state"), np.full(shape, 0.1)),
         "reliable": (("estimator", "state"), reliable), "unreliable_reason": (("estimator", "state"), reason),
         "n_eff_state": (("estimator", "state"), np.full(shape, 40.0)),
         "pareto_k": ("estimator", per_estimator), "ess_fraction": ("estimator", per_estimator),
         "cpu_seconds": ("estimator", np.arange(1.0, len(NAMES) + 1) * 10),
         "n_samples": ("estimator", np.full(len(NAMES), 1000))},
        coords={"estimator": NAMES, "state": states})


def test_every_estimator_has_one_distinct_colour_and_an_unknown_one_is_an_error():
    colours = [estimator_colour(name) for name in NAMES]
    assert len(set(colours)) == len(colours) == 2 + len(ESTIMATORS) + sum(e.raw_companion for e in ESTIMATORS)
    assert UNRELIABLE_COLOUR not in colours
    with pytest.raises(ValueError, match="no colour for estimator 'nonsense'"):
        estimator_colour("nonsense")


def _profile_panels(fig) -> dict[str, object]:
    return {ax.get_title().split("\n")[0]: ax for ax in fig.axes if ax.get_visible() and ax.get_title()}


def test_profiles_draw_every_model_estimator_beside_the_references_in_its_colour():
    fig = free_energy_profiles(profiles_dataset(), summary_dataset(), SETTINGS)
    panels = _profile_panels(fig)
    assert set(panels) == {label(name) for name in MODELS}  # none dropped, no reference given its own panel
    for name in MODELS:
        lines = {line.get_label(): line for line in panels[label(name)].lines}
        assert set(lines) == {label("mbar"), label(QUADRATURE), label(name)}
        expected = UNRELIABLE_COLOUR if name == UNRELIABLE else estimator_colour(name)
        assert to_rgb(lines[label(name)].get_color()) == pytest.approx(expected)
        assert to_rgb(lines[label("mbar")].get_color()) == pytest.approx(estimator_colour("mbar"))


def test_profiles_are_drawn_as_stored_and_masked_points_are_not_drawn():
    fig = free_energy_profiles(profiles_dataset(), summary_dataset(), SETTINGS)
    line = next(line for line in _profile_panels(fig)[label("flow_mcmc")].lines if line.get_label() == label("flow_mcmc"))
    drawn = np.asarray(line.get_ydata(), dtype=float)
    assert np.isnan(drawn[3])  # the 35 kT spike of one effective sample
    expected = np.delete(exact_profile(), 3)
    assert np.delete(drawn, 3) == pytest.approx(expected)  # F = −ln(p / width), no shift
    assert np.exp(-exact_profile()).sum() * WIDTH == pytest.approx(1.0)  # the stored convention: p normalized
    ylims = {ax.get_ylim() for ax in _profile_panels(fig).values()}
    assert len(ylims) == 1 and max(ylims)[1] < 35  # one y scale, not stretched by the masked spike


def test_a_poorly_sampled_reference_point_is_drawn_but_does_not_set_the_scale():
    # A hot replica exchange ladder gives MBAR a point or two far up a barrier, from a handful of samples.
    profiles = profiles_dataset()
    mbar = NAMES.index("mbar")
    profiles["F_x"].values[mbar, 5], profiles["n_eff_x"].values[mbar, 5] = 50.0, 0.5
    fig = free_energy_profiles(profiles, summary_dataset(), SETTINGS)
    ax = _profile_panels(fig)[label("flow")]
    line = next(line for line in ax.lines if line.get_label() == label("mbar"))
    assert np.asarray(line.get_ydata(), dtype=float)[5] == 50.0  # drawn: the reference is never masked
    assert ax.get_ylim()[1] < 20  # but it runs off the top instead of flattening the panel
    # Where no reference point has enough samples (a short run), all of them set the scale.
    profiles["n_eff_x"].values[mbar] = 0.5
    fig = free_energy_profiles(profiles, summary_dataset(), SETTINGS)
    assert _profile_panels(fig)[label("flow")].get_ylim()[1] > 50


def test_unreliable_estimates_say_so_in_profiles_and_surfaces():
    for fig in (free_energy_profiles(profiles_dataset(), summary_dataset(), SETTINGS),
                free_energy_surfaces(surface_dataset(), summary_dataset(), SETTINGS)):
        titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
        marked = [title for title in titles if "unreliable" in title]
        assert marked == [f"{label(UNRELIABLE)}\nunreliable (right)"]


def test_surfaces_have_one_panel_per_estimator_and_leave_bins_with_few_effective_samples_out():
    fig = free_energy_surfaces(surface_dataset(), summary_dataset(), SETTINGS)
    meshes = {ax.get_title().split("\n")[0]: next(c for c in ax.collections if isinstance(c, QuadMesh))
              for ax in fig.axes if ax.get_title()}
    assert set(meshes) == {label(name) for name in NAMES}
    smc = np.ma.getmaskarray(meshes[label("flow_smc")].get_array()).reshape(len(CENTRES), len(CENTRES))
    assert smc[:, :10].all() and not smc[:, 10:].any()  # the array is drawn transposed: (y, x)
    flow = np.asarray(meshes[label("flow")].get_array()).reshape(len(CENTRES), len(CENTRES))
    exact = exact_profile()[:, None] + exact_profile()[None, :]
    expected = np.clip(exact - exact.min(), None, SETTINGS.max_kt).T
    assert flow == pytest.approx(expected)


def test_one_log_weight_far_below_does_not_hide_the_others_and_is_counted():
    rng = np.random.default_rng(0)
    log_w = rng.normal(0.0, 1.5, 2000)
    log_w[0] = -25_000.0
    log_w[1] = -np.inf
    summary = summary_dataset()
    fig = log_weight_histogram({"flow": log_w}, {"flow": 0.4}, summary, SETTINGS)
    ax = fig.axes[0]
    heights = np.array([patch.get_height() for patch in ax.patches if patch.get_height() > 0])
    assert heights.sum() == 1998  # all but the outlier and the non-finite one
    assert len(heights) > 10  # spread over many bars, not squeezed into one
    assert "1 below −30, 1 non-finite" in ax.get_title()
    assert f"k̂ = {float(summary['pareto_k'].sel(estimator='flow')):.2f}" in ax.get_title()


def _curves(**terms) -> xr.Dataset:
    step = np.arange(0, 1000, 10)
    return xr.Dataset({name: ("step", values, {"units": "1", "long_name": name}) for name, values in terms.items()},
                      coords={"step": step})


def test_each_loss_term_has_its_own_axis_and_a_huge_start_does_not_flatten_it():
    step = np.arange(0, 1000, 10)
    nll = 3.0 + 2.0 * np.exp(-step / 200)
    reverse_kl = -5.0 + 0.5 * np.exp(-step / 300)
    reverse_kl[0] = 6000.0
    curves = _curves(train_nll=nll, validation_nll=nll + 0.05, reverse_kl=reverse_kl,
                     ess_fraction=np.full(len(step), 0.3), learning_rate=np.full(len(step), 1e-3))
    fig = training_curves(curves, SETTINGS)
    ax_nll, ax_kl, _ = fig.axes
    assert [line.get_label() for line in ax_nll.lines] == ["train_nll", "validation_nll"]
    assert ax_nll.get_ylim()[1] < 10  # the NLL is not on the reverse-KL scale
    assert ax_kl.get_ylim()[1] < 0 and "1 early records off scale (up to 6e+03)" in ax_kl.get_title()
    fig = score_training_curves(_curves(dsm_loss=nll, learning_rate=np.full(len(step), 1e-3)), SETTINGS)
    assert len(fig.axes) == 1 and "off scale" not in fig.axes[0].get_title()


def test_cost_figure_adds_the_training_md_to_every_model_estimator():
    summary = summary_dataset()
    fig = cost_figure(summary, 1000.0, SETTINGS)
    ax_err = fig.axes[0]
    open_points = [line for line in ax_err.lines if line.get_markerfacecolor() == "white"]
    assert len(open_points) == len(MODELS)
    for name, point in zip(MODELS, open_points):
        assert point.get_xdata()[0] == float(summary["cpu_seconds"].sel(estimator=name)) + 1000.0
    assert "quadrature" in ax_err.get_ylabel()


def test_cost_figure_adds_each_estimator_its_own_training_md():
    # A model that learns the whole ladder (flow_ladder; an annealed flow) costs every temperature's MD.
    summary = summary_dataset()
    seconds = {name: 3000.0 if name == MODELS[0] else 1000.0 for name in summary["estimator"].values}
    fig = cost_figure(summary, seconds, SETTINGS)
    ax_err = fig.axes[0]
    open_points = [line for line in ax_err.lines if line.get_markerfacecolor() == "white"]
    for name, point in zip(MODELS, open_points):
        assert point.get_xdata()[0] == float(summary["cpu_seconds"].sel(estimator=name)) + seconds[name]
    assert any("(1000 or 3000 s)" in text.get_text() for text in fig.legends[0].get_texts())


def _tick_value(text: str) -> float:
    return float(text[:-1]) * {"k": 1e3, "M": 1e6}[text[-1]] if text[-1] in "kM" else float(text)


@pytest.mark.parametrize(("seconds", "ess", "minor"), [
    ((25.0, 60.0), (0.5, 0.9), True),  # under a decade: minor ticks labelled (3×10¹ 4×10¹ ran into each other)
    ((4e4, 9e4), (0.55, 0.65), True),
    ((1.0, 1e5), (1e-5, 1.0), False),  # a paper-scale run against a toy's MBAR; ESS/N down to 1e-5
])
def test_cost_figure_labels_its_log_axes_with_plain_numbers_that_do_not_collide(seconds, ess, minor):
    summary = summary_dataset()
    summary["cpu_seconds"][:] = np.geomspace(*seconds, summary.sizes["estimator"])
    summary["ess_fraction"][:] = np.geomspace(*ess, summary.sizes["estimator"])
    fig = cost_figure(summary, 1e-9, SETTINGS)
    fig.canvas.draw()
    ax_err, ax_ess = fig.axes[:2]
    for axis in (ax_err.xaxis, ax_ess.xaxis, ax_ess.yaxis):
        lo, hi = sorted(axis.get_view_interval())
        ticks = [(tick, tick.label1) for tick in axis.get_major_ticks() + axis.get_minor_ticks()
                 if tick.label1.get_text() and lo <= tick.get_loc() <= hi]
        assert len(ticks) >= 2
        if minor and axis is not ax_ess.yaxis:
            assert any(tick in axis.get_minor_ticks() for tick, _ in ticks)
        for tick, text in ticks:
            assert "e" not in text.get_text() and "×" not in text.get_text()
            assert _tick_value(text.get_text()) == pytest.approx(tick.get_loc())
        boxes = sorted((text.get_window_extent() for _, text in ticks), key=lambda box: (box.x0, box.y0))
        assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))


def test_the_training_md_of_a_model_that_learns_the_ladder_is_every_temperature_s():
    names = ["mbar", "flow", "flow_raw", "score_exact", "score_exact_raw", "flow_ladder", "flow_smc", "flow_mcmc",
             "score_smc"]
    plain = training_md_seconds(names, 10.0, 30.0, annealing=False)
    assert [name for name in names if plain[name] == 30.0] == ["flow_ladder"]
    assert plain["mbar"] == plain["flow_raw"] == plain["score_smc"] == 10.0
    annealed = training_md_seconds(names, 10.0, 30.0, annealing=True)
    assert [name for name in names if annealed[name] == 30.0] == ["flow", "flow_raw", "flow_ladder", "flow_smc",
                                                                   "flow_mcmc"]


def test_summary_table_marks_unreliable_rows_with_their_reason():
    page = summary_html(summary_dataset(), "toy")
    assert page.count('<tr class="unreliable">') == 1
    assert page.count('<tr class="reliable">') == 2 * len(NAMES) - 1
    row = next(line for line in page.splitlines() if 'class="unreliable"' in line)
    assert label(UNRELIABLE) in row and "Pareto k &gt; 0.7" in row and "3.00 ± 0.10" in row


def test_benchmark_cpu_seconds_sum_cpu_time_and_fall_back_to_wall_seconds(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (tmp_path / "a.tsv").write_text(header + "10.0\t0:00:10\t1\t1\t1\t1\t0\t0\t90\t9.5\n")
    (tmp_path / "b.tsv").write_text(header + "4.0\t0:00:04\t1\t1\t1\t1\t0\t0\t0\t0\n")  # no CPU time recorded
    assert cpu_seconds([tmp_path / "a.tsv", tmp_path / "b.tsv"]) == pytest.approx(13.5)


def test_training_figure_marks_where_the_refinement_starts_and_shows_the_buffer():
    step = np.arange(0, 1000, 10)  # as _curves has it
    phase = (step > 500).astype(np.int64)
    nll = np.linspace(3.0, 2.0, len(step))
    buffer_nll = np.where(phase == 1, nll + 0.1, np.nan)
    curves = _curves(train_nll=nll, validation_nll=nll + 0.05, reverse_kl=np.full(len(step), np.nan),
                     buffer_nll=buffer_nll, buffer_ess_fraction=np.where(phase == 1, 0.5, np.nan),
                     ess_fraction=np.full(len(step), 0.3), learning_rate=np.full(len(step), 1e-3), phase=phase)
    fig = training_curves(curves, SETTINGS)
    ax_nll, ax_buffer, ax_ess = fig.axes
    assert "replay-buffer" in ax_buffer.get_title() and len(ax_ess.lines) >= 2
    for ax in fig.axes:  # a vertical line at the last maximum-likelihood record
        assert any(list(line.get_xdata()) == [500, 500] for line in ax.lines)


def test_training_figure_draws_a_line_at_each_annealing_temperature_and_says_the_ess_is_at_each():
    step = np.arange(0, 1000, 10)
    temperature = np.select([step <= 500, step <= 750], [500.0, 400.0], 300.0)
    phase = (temperature < 500).astype(np.int64) * 2
    nll = np.linspace(3.0, 2.0, len(step))
    curves = _curves(train_nll=np.where(phase == 0, nll, np.nan), validation_nll=nll + 0.05,
                     reverse_kl=np.full(len(step), np.nan), buffer_nll=np.where(phase == 2, nll, np.nan),
                     buffer_ess_fraction=np.where(phase == 2, 0.9, np.nan), ess_fraction=np.full(len(step), 0.9),
                     learning_rate=np.full(len(step), 1e-3), phase=phase, temperature=temperature)
    fig = training_curves(curves, SETTINGS)
    ax_nll, _, ax_ess = fig.axes
    for ax in fig.axes:  # the last record at 500 K and the last at 400 K
        assert {500, 750} <= {line.get_xdata()[0] for line in ax.lines if len(set(line.get_xdata())) == 1}
    assert "500 → 300 K" in ax_ess.get_title() and "each record's temperature" in ax_nll.get_title()
    assert any("annealing" in text.get_text() for text in ax_nll.texts)


def test_ladder_figure_draws_each_model_against_mbar_and_marks_unreliable_temperatures():
    from boltzflow.plots import ladder_free_energies

    temperatures = np.array([300.0, 400.0, 500.0])
    mbar = xr.Dataset({"f": ("temperature", [0.0, -0.2, -0.4]), "df": ("temperature", [0.0, 0.01, 0.02])},
                      coords={"temperature": temperatures})
    ladder = xr.Dataset({"f": ("temperature", [0.0, -0.19, -0.9]), "df": ("temperature", [0.0, 0.01, 0.02]),
                         "ess_fraction": ("temperature", [0.9, 0.5, 0.001]),
                         "reliable": ("temperature", [True, True, False])}, coords={"temperature": temperatures})
    fig = ladder_free_energies(mbar, {"flow_ladder": ladder})
    ax_f, ax_ess = fig.axes
    reliable = [c for c in ax_f.containers if c.get_label() == label("flow_ladder")][0]
    unreliable = [c for c in ax_f.containers if c.get_label().endswith("unreliable")][0]
    # f − f_MBAR: the reliable points at 0 and +0.01, the unreliable one at −0.5, greyed and hollow.
    np.testing.assert_allclose(reliable.lines[0].get_ydata(), [0.0, 0.01], atol=1e-12)
    np.testing.assert_allclose(unreliable.lines[0].get_ydata(), [-0.5])
    assert to_rgb(unreliable.lines[0].get_color()) == to_rgb(UNRELIABLE_COLOUR)
    assert to_rgb(reliable.lines[0].get_color()) == to_rgb(estimator_colour("flow_ladder"))
    assert ax_ess.get_yscale() == "log"  # the ESS spans decades
