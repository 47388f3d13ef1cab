"""Figures (seaborn/matplotlib) drawn from the netCDF outputs; each function returns a Figure.

Free energies are plotted in kT at the target temperature; CV axes carry the units stored with them.
Every figure colours an estimator the same way (``estimator_colour``), draws the references (``mbar``
and, for toys, the exact ``quadrature``) as reference lines rather than as models, greys and hatches an
estimate that the summary marks unreliable and says so in its title, and leaves out profile points and
surface bins with fewer than ``figures.min_bin_effective_samples`` effective samples.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")  # figures are files; no display on a cluster node

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.colors import BoundaryNorm
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import LogFormatter

from boltzflow.estimator_table import ESTIMATORS, REFERENCE, label
from boltzflow.settings import FigureSettings
from boltzflow.units import kt_kj_mol

#: The exact answer of a toy system, by quadrature: drawn like the MBAR reference, as a reference line.
QUADRATURE = "quadrature"
REFERENCES = (REFERENCE.name, QUADRATURE)
#: Grey is kept for unreliable estimates, so no estimator gets it.
UNRELIABLE_COLOUR = (0.62, 0.62, 0.62)
UNRELIABLE_HATCH = "///"
#: The figures block's defaults (a frozen dataclass: one shared instance is safe).
DEFAULT_SETTINGS = FigureSettings()
#: The log-weight histograms show the top this many nats below the largest log-weight.
LOG_WEIGHT_RANGE_NATS = 30.0


def estimator_names() -> list[str]:
    """Every estimator a figure may show, in the summary's order: references, then each model estimator
    followed by its unweighted companion."""
    names = list(REFERENCES)
    for estimator in ESTIMATORS:
        names.append(estimator.name)
        if estimator.raw_companion:
            names.append(f"{estimator.name}_raw")
    return names


def _palette() -> dict[str, tuple]:
    tab10 = sns.color_palette("tab10")
    base = [colour for i, colour in enumerate(tab10) if i != 7]  # tab10's 8th colour is grey
    if len(ESTIMATORS) > len(base):
        base = sns.color_palette("husl", len(ESTIMATORS))
    colours = {REFERENCE.name: (0.0, 0.0, 0.0), QUADRATURE: (0.55, 0.0, 0.0)}
    for estimator, colour in zip(ESTIMATORS, base, strict=False):
        colours[estimator.name] = tuple(colour)
        # the unweighted model is its reweighted estimator's colour, paler: the pair reads as one model
        colours[f"{estimator.name}_raw"] = tuple(0.5 * c + 0.5 for c in colour)
    return colours


_COLOURS = _palette()


def estimator_colour(name: str) -> tuple:
    """The one colour of an estimator in every figure (an unknown name is an error, never a recycled colour)."""
    try:
        return _COLOURS[name]
    except KeyError:
        raise ValueError(f"no colour for estimator {name!r}: add it to estimator_table.ESTIMATORS") from None


def ordered_estimators(names) -> list[str]:
    """Names in the palette's order; every name is kept (an unknown one raises in estimator_colour)."""
    names = [str(name) for name in names]
    for name in names:
        estimator_colour(name)
    order = estimator_names()
    return sorted(names, key=order.index)


def unreliable_states(summary: xr.Dataset | None, name: str) -> list[str]:
    """The states for which the summary marks an estimator unreliable (none for one it does not list)."""
    if summary is None or name not in summary["estimator"].values:
        return []
    reliable = summary["reliable"].sel(estimator=name).values.astype(bool)
    return [str(state) for state, ok in zip(summary["state"].values, reliable) if not ok]


def _title(summary: xr.Dataset | None, name: str) -> str:
    bad = unreliable_states(summary, name)
    if not bad:
        return label(name)
    where = "" if len(bad) == summary.sizes["state"] else f" ({', '.join(bad)})"
    return f"{label(name)}\nunreliable{where}"


def _mark_unreliable(ax) -> None:
    """Hatch the whole panel: an unreliable estimate is visibly not a result."""
    ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, hatch=UNRELIABLE_HATCH,
                           edgecolor=(0.82, 0.82, 0.82), linewidth=0, zorder=0))
    ax.title.set_color("0.35")


def _surface_variable(dataset: xr.Dataset) -> str:
    """The surface F_{cv1}{cv2} (its companion n_eff_{cv1}{cv2} and any other variable are not it)."""
    names = [name for name in dataset.data_vars if name.startswith("F_") and dataset[name].ndim == 3]
    if len(names) != 1:
        raise ValueError(f"expected one surface F_<cv1><cv2> in the surface file, found {names or 'none'}")
    return names[0]


def _axis_label(dataset: xr.Dataset, cv: str) -> str:
    return f"{cv} / {dataset[cv].attrs.get('units', '')}".rstrip(" /")


def _masked(values: xr.DataArray, n_eff: xr.DataArray, minimum: float) -> np.ndarray:
    """Values with too few effective samples (or none recorded) set to NaN: they are not drawn."""
    return np.where(n_eff.values >= minimum, values.values, np.nan)


def _panel_grid(n_panels: int, panel_height: float, columns: int = 4, **kwargs):
    """A figure with n panels in rows of at most ``columns``, the unused ones hidden; axes as a 2D array."""
    columns = min(columns, n_panels)
    rows = -(-n_panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, panel_height * rows), layout="constrained",
                             squeeze=False, **kwargs)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def free_energy_surfaces(surface: xr.Dataset, summary: xr.Dataset | None = None,
                         settings: FigureSettings = DEFAULT_SETTINGS):
    """One panel per estimator: F over the first two CVs, each shifted to a minimum of 0, clipped at
    ``settings.max_kt``; bins with fewer than ``settings.min_bin_effective_samples`` effective samples are
    left white."""
    sns.set_theme(style=settings.style)
    name = _surface_variable(surface)
    n_eff = surface[f"n_eff_{name[2:]}"]
    first, second = [d for d in surface[name].dims if d != "estimator"]
    estimators = ordered_estimators(surface["estimator"].values)
    fig, axes = _panel_grid(len(estimators), 3.1, sharex=True, sharey=True)
    levels = np.linspace(0, settings.max_kt, 21)
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    norm = BoundaryNorm(levels, cmap.N)
    x_edges, y_edges = surface[f"{first}_edges"].values, surface[f"{second}_edges"].values
    for ax, estimator in zip(axes.flat, estimators):
        # The references are drawn wherever they have samples: MBAR's effective counts are per independent
        # sample (frames over g), often below the threshold for a whole CI-sized run, and a figure without
        # its reference shows nothing; its title and the summary say when it is unreliable.
        minimum = 0.0 if estimator in REFERENCES else settings.min_bin_effective_samples
        values = _masked(surface[name].sel(estimator=estimator), n_eff.sel(estimator=estimator), minimum)
        if np.isfinite(values).any():
            values = np.clip(values - np.nanmin(values), None, settings.max_kt)
        else:
            ax.text(0.5, 0.5, f"no bin with ≥ {settings.min_bin_effective_samples:g}\neffective samples",
                    transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.35")
        mesh = ax.pcolormesh(x_edges, y_edges, np.ma.masked_invalid(values).T, cmap=cmap, norm=norm)
        ax.set_title(_title(summary, estimator), fontsize=9)
        if unreliable_states(summary, estimator):
            mesh.set_alpha(0.45)
            _mark_unreliable(ax)
    for ax in axes.flat[max(0, len(estimators) - axes.shape[1]):len(estimators)]:  # lowest of each column
        ax.xaxis.set_tick_params(labelbottom=True)  # also above a hidden panel of a short last row
        ax.set_xlabel(_axis_label(surface, first))
    for ax in axes[:, 0]:
        ax.set_ylabel(_axis_label(surface, second))
    fig.colorbar(mesh, ax=axes, label="(F − min F) / kT", shrink=0.8)
    return fig


def _draw_profile(ax, profiles: xr.Dataset, cv: str, name: str, minimum: float, unreliable: bool = False):
    """One estimator's profile and its ±1 standard-error band, masked bins left out; its drawn values."""
    f = _masked(profiles[f"F_{cv}"].sel(estimator=name), profiles[f"n_eff_{cv}"].sel(estimator=name), minimum)
    df = profiles[f"dF_{cv}"].sel(estimator=name).values
    centres = profiles[cv].values
    colour = UNRELIABLE_COLOUR if unreliable else estimator_colour(name)
    style = "--" if name == QUADRATURE else "-"
    reference = name in REFERENCES
    # the estimate on top of the references: it is what the panel is about
    ax.plot(centres, f, style, color=colour, marker=None if reference else ".", markersize=3,
            lw=1.0 if reference else 1.5, label=label(name), zorder=2 if reference else 4)
    if np.isfinite(df).any():
        ax.fill_between(centres, f - df, f + df, color=colour, alpha=0.18 if reference else 0.3, linewidth=0,
                        zorder=1 if reference else 3)
    return f


def free_energy_profiles(profiles: xr.Dataset, summary: xr.Dataset | None = None,
                         settings: FigureSettings = DEFAULT_SETTINGS):
    """Small multiples: one panel per (CV, model estimator), each beside the references (MBAR with its
    ±1 standard-error band; quadrature for toys), sharing the y-axis along a CV.

    Profiles are drawn as stored, F = −ln(p / bin width) with p normalized (no shift), so every panel of a CV
    is on the same scale. Points with fewer than ``settings.min_bin_effective_samples`` effective samples
    are not drawn.
    """
    sns.set_theme(style=settings.style)
    cvs = [name[2:] for name in profiles.data_vars if name.startswith("F_")]
    names = ordered_estimators(profiles["estimator"].values)
    references = [name for name in names if name in REFERENCES]
    panels = [name for name in names if name not in REFERENCES] or references[:1]
    columns = min(5, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows * len(cvs), columns, figsize=(3.2 * columns, 2.5 * rows * len(cvs) + 0.6),
                             layout="constrained", squeeze=False)
    minimum = settings.min_bin_effective_samples
    for i, cv in enumerate(cvs):
        block = axes[i * rows:(i + 1) * rows]
        drawn = []
        for ax, name in zip(block.flat, panels):
            for reference in references:
                f = _draw_profile(ax, profiles, cv, reference, 0.0)  # unmasked, with its error band (see surfaces)
                if reference != QUADRATURE:  # exact everywhere, far up the walls: the samples set the scale
                    # ... and only the reference's well-sampled points: a hot ladder gives MBAR a few samples
                    # far up the barriers (tens of kT, with bands as wide), which would flatten every panel;
                    # there the line runs off the top. A reference with no such point sets it with them all.
                    sampled = _masked(profiles[f"F_{cv}"].sel(estimator=reference),
                                      profiles[f"n_eff_{cv}"].sel(estimator=reference), minimum)
                    drawn.append(sampled if np.isfinite(sampled).any() else f)
            if name not in REFERENCES:
                unreliable = bool(unreliable_states(summary, name))
                drawn.append(_draw_profile(ax, profiles, cv, name, minimum, unreliable))
                if unreliable:
                    _mark_unreliable(ax)
            ax.set_title(_title(summary, name), fontsize=9)
        for ax in block.flat[len(panels):]:
            ax.set_visible(False)
        values = np.concatenate(drawn)
        if np.isfinite(values).any():
            lo, hi = np.nanmin(values), np.nanmax(values)
            margin = 0.06 * max(hi - lo, 1.0)
            for ax in block.flat:
                ax.set_ylim(lo - margin, hi + margin)
        for j, ax in enumerate(block.flat[:len(panels)]):
            if j % columns == 0:
                ax.set_ylabel(f"F({cv}) / kT")
            else:
                ax.tick_params(labelleft=False)
            if j >= len(panels) - columns:  # the lowest panel of each column
                ax.set_xlabel(_axis_label(profiles, cv))
    handles = [Line2D([], [], color=estimator_colour(r), ls="--" if r == QUADRATURE else "-", label=label(r))
               for r in references]
    handles.append(Patch(facecolor="white", edgecolor=UNRELIABLE_COLOUR, hatch=UNRELIABLE_HATCH,
                         label="unreliable (summary)"))
    handles.append(Line2D([], [], color="none", label=f"model points with < {minimum:g} effective samples not drawn"))
    fig.legend(handles=handles, loc="outside upper center", ncol=len(handles), frameon=False, fontsize=9)
    return fig


def log_weight_histogram(log_ws: dict[str, np.ndarray], ess_fractions: dict[str, float],
                         summary: xr.Dataset | None = None, settings: FigureSettings = DEFAULT_SETTINGS):
    """One panel per estimator: histogram of ln w − max ln w over the top ``LOG_WEIGHT_RANGE_NATS`` nats.

    Weights further below the largest carry less than e^-30 of its weight each; one far outlier (a
    log-weight of −25,000) would otherwise squeeze every other sample into one bar. Their number is in the
    title, beside the non-finite ones, ESS/N and Pareto k̂ (when the summary has it).
    """
    sns.set_theme(style=settings.style)
    names = ordered_estimators(log_ws)
    fig, axes = _panel_grid(len(names), 2.9)
    bins = np.linspace(-LOG_WEIGHT_RANGE_NATS, 0, 61)
    for ax, name in zip(axes.flat, names):
        log_w = log_ws[name]
        finite = log_w[np.isfinite(log_w)]
        shifted = finite - finite.max() if finite.size else finite
        shown = shifted[shifted >= -LOG_WEIGHT_RANGE_NATS]
        unreliable = bool(unreliable_states(summary, name))
        colour = UNRELIABLE_COLOUR if unreliable else estimator_colour(name)
        ax.hist(shown, bins=bins, color=colour, hatch=UNRELIABLE_HATCH if unreliable else None,
                edgecolor="white" if not unreliable else "0.4", linewidth=0.3)
        ax.set_xlim(-LOG_WEIGHT_RANGE_NATS, 0.5)
        ax.set_xlabel("ln w − max ln w")
        ax.set_ylabel("samples")
        diagnostics = f"ESS/N = {ess_fractions[name]:.2g}"
        if summary is not None and "pareto_k" in summary and name in summary["estimator"].values:
            diagnostics += f", k̂ = {float(summary['pareto_k'].sel(estimator=name)):.2f}"
        below = shifted.size - shown.size
        counts = f"{below} below −{LOG_WEIGHT_RANGE_NATS:g}, {len(log_w) - len(finite)} non-finite"
        ax.set_title(f"{_title(summary, name)}\n{diagnostics}\n{counts}", fontsize=8)
        if unreliable:
            ax.title.set_color("0.35")
    return fig


def _reference_name(summary: xr.Dataset) -> str:
    return QUADRATURE if QUADRATURE in summary["estimator"].values else REFERENCE.name


def _plain_number(x: float, significant: int = 12) -> str:
    """30, 0.9, 0.00001, 40k, 2M to ``significant`` digits: no exponent, no float noise (0.30000000000000004),
    short above ten thousand."""
    x = float(f"{x:.{significant}g}")
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= max(scale, 1e4):
            return f"{x / scale:.12g}{suffix}"
    return np.format_float_positional(x, trim="-")


class _PlainLogFormatter(LogFormatter):
    """Log-axis labels as plain numbers (30, 0.9, 40k), not 3×10¹ or 9e-01; LogFormatter picks which ticks."""

    def __call__(self, x, pos=None):
        return _plain_number(x) if super().__call__(x, pos) else ""


def cost_figure(summary: xr.Dataset, training_md_seconds: float | Mapping[str, float],
                settings: FigureSettings = DEFAULT_SETTINGS):
    """CPU seconds against the ΔF error and ESS/N, one row per estimator.

    The ΔF error is the root mean square over the non-reference states of (ΔF − ΔF_ref), ref the exact
    quadrature where the summary has it and MBAR otherwise; the error bar is the root mean square of the
    combined standard errors. Each model estimator is drawn twice, joined by a line: its own rules
    (filled) and with the CPU seconds of the MD it trains on added (open): ``training_md_seconds``, one
    number for all, or one per estimator (a model that learns the whole ladder costs the MD of every
    temperature; Langevin toys run one MD job per temperature, so that differs from the target's).
    """
    if not isinstance(training_md_seconds, Mapping):
        training_md_seconds = dict.fromkeys(summary["estimator"].values, float(training_md_seconds))
    sns.set_theme(style=settings.style)
    reference = _reference_name(summary)
    names = [name for name in ordered_estimators(summary["estimator"].values) if name != reference and name != QUADRATURE]
    ref_values = summary["delta_f"].sel(estimator=reference).values[1:]
    ref_err = np.nan_to_num(summary["delta_f_err"].sel(estimator=reference).values[1:])
    fig, (ax_err, ax_ess) = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    mbar_cost = float(summary["cpu_seconds"].sel(estimator=REFERENCE.name))
    for name in names:
        unreliable = bool(unreliable_states(summary, name))
        colour = UNRELIABLE_COLOUR if unreliable else estimator_colour(name)
        cost = float(summary["cpu_seconds"].sel(estimator=name))
        values = summary["delta_f"].sel(estimator=name).values[1:]
        errors = summary["delta_f_err"].sel(estimator=name).values[1:]
        rms = float(np.sqrt(np.nanmean((values - ref_values) ** 2)))
        bar = float(np.sqrt(np.nanmean(errors**2 + ref_err**2)))
        ess = float(summary["ess_fraction"].sel(estimator=name))
        text = label(name) + (" (unreliable)" if unreliable else "")
        ax_err.errorbar(cost, rms, yerr=bar, fmt="o", color=colour, label=text, capsize=3,
                        mec="0.3" if unreliable else colour)
        costs = [cost] if name == REFERENCE.name else [cost, cost + training_md_seconds[name]]
        if len(costs) == 2:
            ax_err.plot(costs, [rms, rms], "-", color=colour, lw=1)
            ax_err.plot(costs[1], rms, "o", mfc="white", mec=colour)
        if np.isfinite(ess):
            ax_ess.plot(costs, [ess] * len(costs), "-", color=colour, lw=1)
            ax_ess.plot(cost, ess, "o", color=colour)
            if len(costs) == 2:
                ax_ess.plot(costs[1], ess, "o", mfc="white", mec=colour)
    ax_err.axvline(mbar_cost, color="k", ls=":", lw=1)
    ax_ess.axvline(mbar_cost, color="k", ls=":", lw=1)
    for ax in (ax_err, ax_ess):
        ax.set_xscale("log")
        ax.set_xlabel("CPU seconds")
    ax_err.set_ylabel(f"RMS of ΔF − ΔF({label(reference)}) / kT")
    ax_ess.set_yscale("log")
    # Over less than a decade the minor ticks are labelled too; as 3×10¹ they ran into each other.
    for axis in (ax_err.xaxis, ax_ess.xaxis, ax_ess.yaxis):
        axis.set_major_formatter(_PlainLogFormatter())
        axis.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    ax_ess.set_ylabel("ESS / N")
    # The distinct MD costs as printed (replica exchange: target and ladder differ by the per-temperature jobs).
    md_costs = list(dict.fromkeys(_plain_number(seconds, 3) for seconds in
                                  sorted(training_md_seconds[name] for name in names if name != REFERENCE.name)))
    key = [Line2D([], [], ls="none", marker="o", color="0.3", label="model only (training, sampling, reweighting)"),
           Line2D([], [], ls="none", marker="o", mfc="white", mec="0.3",
                  label="model + MD it trains on" + (f" ({' or '.join(md_costs)} s)" if md_costs else "")),
           Line2D([], [], ls=":", color="k", label=f"MD + MBAR ({_plain_number(mbar_cost, 3)} s)")]
    handles, _ = ax_err.get_legend_handles_labels()
    fig.legend(handles=handles + key, loc="outside right upper", frameon=False, fontsize=8)
    return fig


def _zoom_past_start(ax, values: np.ndarray) -> str:
    """Fit the y-axis to the curve after its first tenth when its start would flatten it; a title note.

    The first reverse-KL values of a flow far from the target (~6,000 nats) otherwise squeeze the rest into
    a line.
    """
    finite = values[np.isfinite(values)]
    tail = finite[len(finite) // 10:]
    if tail.size < 2:
        return ""
    lo, hi = tail.min(), tail.max()
    span = max(hi - lo, 1e-9)
    outside = (finite > hi + 3 * span) | (finite < lo - 3 * span)
    if not outside.any():
        return ""
    ax.set_ylim(lo - 0.1 * span, hi + 0.1 * span)
    extreme = finite[outside][np.argmax(np.abs(finite[outside]))]
    return f"\n{int(outside.sum())} early records off scale (up to {extreme:.3g})"


def _loss_panels(axes, curves: xr.Dataset, terms: list[tuple[str, str, list[str]]]) -> None:
    """Each loss term (title, y label, curves) on its own axis; curves of one term (training and
    validation NLL) share one."""
    for ax, (title, ylabel, names) in zip(axes, terms):
        for i, name in enumerate(names):
            ax.plot(curves["step"], curves[name], color=f"C{i}", label=curves[name].attrs.get("long_name", name))
        note = _zoom_past_start(ax, np.concatenate([curves[name].values for name in names]))
        ax.set_title(title + note, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        if len(names) > 1:
            ax.legend(frameon=False, fontsize=7, loc="best")


def _ess_scale(ax, values) -> None:
    """ESS/N on a log axis where it spans decades, else as the plain fraction from 0 to 1."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size and finite.min() < 0.05:
        ax.set_yscale("log")
    else:
        ax.set_ylim(0.0, 1.02)


#: How the training figure labels the start of a phase (``phase`` of the flow's curves).
PHASE_LABELS = {1: "refinement →", 2: "annealing (dotted: next temperature) →"}


def _broken_at_temperature_changes(curves: xr.Dataset) -> xr.Dataset:
    """The curves with a NaN record between two records at different temperatures (a line breaks there)."""
    temperatures = curves["temperature"].values
    changes = np.flatnonzero(temperatures[1:] != temperatures[:-1]) + 1
    pieces, start = [], 0
    for change in changes:
        gap = curves.isel(step=[change - 1]).astype(float) * np.nan
        gap = gap.assign_coords(step=[float(curves["step"].values[change - 1]) + 0.5])
        pieces += [curves.isel(step=slice(start, change)).astype(float), gap]
        start = change
    pieces.append(curves.isel(step=slice(start, None)).astype(float))
    return xr.concat(pieces, dim="step").assign_attrs(curves.attrs)


def training_curves(curves: xr.Dataset, settings: FigureSettings = DEFAULT_SETTINGS, estimator: str = "flow"):
    """A flow's training: NLL (training and validation), the reverse-KL term if used, each on its own
    axis, and ESS/N of the monitor samples over training, in ``estimator``'s colour."""
    sns.set_theme(style=settings.style)
    temperatures = curves["temperature"].values if "temperature" in curves else None
    annealed = temperatures is not None and len(np.unique(temperatures)) > 1
    terms = [("negative log-likelihood" + (" (MD of each record's temperature)" if annealed else ""),
              "nats per sample", ["train_nll", "validation_nll"])]
    if np.isfinite(curves["reverse_kl"].values).any():
        terms.append(("reverse-KL (energy) term", "nats per sample", ["reverse_kl"]))
    if "buffer_nll" in curves and np.isfinite(curves["buffer_nll"].values).any():
        terms.append(("replay-buffer NLL (forward KL to p)", "nats per sample", ["buffer_nll"]))
    fig, axes = plt.subplots(1, len(terms) + 1, figsize=(4.4 * (len(terms) + 1), 3.5), layout="constrained")
    # Each temperature's records as a line of their own: a jump between two is the temperature's, not training's.
    drawn = _broken_at_temperature_changes(curves) if annealed else curves
    _loss_panels(axes[:-1], drawn, terms)
    ax_ess = axes[-1]
    if "ess_fraction" in curves:
        ax_ess.plot(drawn["step"], drawn["ess_fraction"], marker="o", color=estimator_colour(estimator),
                    label="monitor samples (fixed noise)")
    if "buffer_ess_fraction" in curves and np.isfinite(curves["buffer_ess_fraction"].values).any():
        ax_ess.plot(drawn["step"], drawn["buffer_ess_fraction"], color="0.4", linestyle="--",
                    label="replay buffer (all its samples)")
        ax_ess.legend(frameon=False, fontsize=7, loc="lower right")
    _ess_scale(ax_ess, np.concatenate([curves[name].values for name in ("ess_fraction", "buffer_ess_fraction")
                                       if name in curves]))
    if annealed:
        ax_ess.set_title(f"ESS / N at each record's temperature ({temperatures[0]:g} → {temperatures[-1]:g} K)",
                         fontsize=9)
    else:
        ax_ess.set_title("ESS / N over training", fontsize=9)
    if "phase" in curves:
        # A phase (or, when annealing, a temperature) starts after the last record of the one before.
        phase, step = curves["phase"].values, curves["step"].values
        changed = phase[1:] != phase[:-1]
        if temperatures is not None:
            changed |= temperatures[1:] != temperatures[:-1]
        labelled = set()
        for i in np.flatnonzero(changed) + 1:
            for ax in axes:
                ax.axvline(step[i - 1], color="0.6", linestyle=":", linewidth=1)
            if phase[i] not in labelled:
                labelled.add(phase[i])
                axes[0].annotate(PHASE_LABELS.get(int(phase[i]), "phase →"), (step[i - 1], 1.0),
                                 xycoords=("data", "axes fraction"), xytext=(3, -10), textcoords="offset points",
                                 fontsize=7, color="0.4")
    if annealed:
        # Each temperature's name over its stretch of records, on a top axis of the ESS panel (off the data).
        step = curves["step"].values
        starts = np.r_[0, np.flatnonzero(temperatures[1:] != temperatures[:-1]) + 1]
        ends = np.r_[starts[1:], len(step)]
        middles = [((step[start - 1] if start else 0) + step[end - 1]) / 2 for start, end in zip(starts, ends, strict=True)]
        top = ax_ess.secondary_xaxis("top")
        top.set_xticks(middles, labels=[f"{temperatures[start]:g} K" for start in starts])
        top.tick_params(labelsize=6, length=0, labelcolor="0.4")
    ax_ess.set_xlabel("optimizer step")
    ax_ess.set_ylabel("ESS / N")
    return fig


def score_training_curves(curves: xr.Dataset, settings: FigureSettings = DEFAULT_SETTINGS):
    """The score model's loss terms over training, each on its own axis (today one: the DSM loss)."""
    sns.set_theme(style=settings.style)
    names = [name for name in curves.data_vars if name != "learning_rate" and curves[name].dims == ("step",)]
    terms = [("DSM loss" if name == "dsm_loss" else name, "loss per sample", [name]) for name in names]
    fig, axes = plt.subplots(1, len(terms), figsize=(5.2 * len(terms), 3.5), layout="constrained", squeeze=False)
    _loss_panels(axes[0], curves, terms)
    return fig


def ladder_free_energies(mbar: xr.Dataset, ladders: dict[str, xr.Dataset], settings: FigureSettings = DEFAULT_SETTINGS):
    """f(T) of each temperature-conditioned model against MBAR over the ladder, and its ESS/N per temperature.

    f is reduced at each temperature and relative to the first, like ``mbar.nc``; the left panel shows
    f_model − f_MBAR with the model's bootstrap error, MBAR's own error as a grey band around zero, and
    temperatures whose estimate is unreliable as hollow grey markers.
    """
    sns.set_theme(style=settings.style)
    fig, (ax_f, ax_ess) = plt.subplots(1, 2, figsize=(10.0, 3.8), layout="constrained")
    temperatures = mbar["temperature"].values
    ax_f.fill_between(temperatures, -mbar["df"].values, mbar["df"].values, color="0.85", label="MBAR ± 1σ")
    ax_f.axhline(0.0, color=estimator_colour(REFERENCE.name), linewidth=1)
    offsets = np.linspace(-0.01, 0.01, len(ladders)) if len(ladders) > 1 else [0.0]
    for (name, ladder), offset in zip(ladders.items(), offsets, strict=True):
        colour = estimator_colour(name)
        t = ladder["temperature"].values
        difference = ladder["f"].values - mbar["f"].sel(temperature=t).values
        reliable = ladder["reliable"].values.astype(bool)
        x = t * (1 + offset)  # side by side where several models share a temperature
        ax_f.errorbar(x[reliable], difference[reliable], yerr=ladder["df"].values[reliable], fmt="o", color=colour,
                      capsize=3, label=label(name))
        if (~reliable).any():
            ax_f.errorbar(x[~reliable], difference[~reliable], yerr=ladder["df"].values[~reliable], fmt="o",
                          mfc="none", color=UNRELIABLE_COLOUR, capsize=3, label=f"{label(name)}: unreliable")
        ax_ess.plot(t, ladder["ess_fraction"].values, marker="o", color=colour, label=label(name))
    _ess_scale(ax_ess, np.concatenate([ladder["ess_fraction"].values for ladder in ladders.values()] or [[1.0]]))
    ax_f.set_xlabel("temperature (K)")
    ax_f.set_ylabel("f(T) − f_MBAR(T)  (kT at T)")
    ax_f.set_title("reduced free energy over the ladder, relative to the target", fontsize=9)
    ax_f.legend(frameon=False, fontsize=7, loc="best")
    ax_ess.set_xlabel("temperature (K)")
    ax_ess.set_ylabel("ESS / N")
    ax_ess.set_title("importance-sampling efficiency at each temperature", fontsize=9)
    return fig


def energy_distributions(md: xr.Dataset, samples: xr.Dataset, settings: FigureSettings = DEFAULT_SETTINGS):
    """Histograms of the potential energy (kJ/mol): MD, flow samples, and flow samples weighted by w."""
    sns.set_theme(style=settings.style)
    md_energy = md["energy"].values
    temperature = float(samples.attrs["temperature_k"])
    flow_energy = samples["reduced_energy"].values * kt_kj_mol(temperature)
    log_w = samples["log_w"].values
    finite = np.isfinite(flow_energy) & np.isfinite(log_w)
    weights = np.exp(log_w[finite] - log_w[finite].max())
    lo, hi = np.quantile(md_energy, [0.001, 0.999])
    margin = 0.25 * (hi - lo)
    bins = np.linspace(lo - margin, hi + margin, 80)
    fig, ax = plt.subplots(figsize=(5.5, 3.6), layout="constrained")
    ax.hist(md_energy, bins=bins, density=True, histtype="step", lw=2, color=estimator_colour("mbar"), label="MD")
    ax.hist(flow_energy[finite], bins=bins, density=True, histtype="step", color=estimator_colour("flow_raw"),
            label=label("flow_raw"))
    ax.hist(flow_energy[finite], bins=bins, weights=weights, density=True, histtype="step",
            color=estimator_colour("flow"), label=label("flow"))
    ax.set_xlabel("potential energy / kJ mol⁻¹")
    ax.set_ylabel("density")
    ax.set_title(f"{temperature:g} K, {int((~finite).sum())} non-finite samples left out", fontsize=9)
    fig.legend(loc="outside right upper", frameon=False, fontsize=8)
    return fig


def save_figure(figure, path) -> None:
    """Save atomically (a half-written PNG never carries the final name) and free the figure."""
    from boltzflow.io import atomic_path

    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=150)
    plt.close(figure)
