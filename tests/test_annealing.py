"""Temperature annealing of the flow (flow.anneal_steps, after TA-BG): maximum likelihood on the hottest
temperature's MD, then importance-weighted refits to the flow's own samples at each lower temperature. Checked
against quadrature on the double well: after each temperature the flow's NLL on that temperature's held-out
samples is their exact -ln p_T, and the annealed flow holds the target's well populations without weights."""

from pathlib import Path

import numpy as np
import pytest
import torch
from test_ladder import _exact_samples, _quadrature_log_z

from boltzflow.config import ConfigError, load_schema, validate_config
from boltzflow.settings import FlowSettings, SamplingSettings
from boltzflow.stages.flow import curves_dataset, fit_flow, sample_flow_stage, validation_split
from boltzflow.systems import toy_system_from_config
from boltzflow.training import BufferSettings, train_flow

TEMPERATURES = [300.0, 400.0, 500.0]
SCHEMA = load_schema(Path(__file__).resolve().parents[1] / "config/schema.yaml")


@pytest.fixture(scope="module")
def double_well():
    return toy_system_from_config("double_well", {
        "type": "toy2d", "energy": "8*(x^2 - 1)^2 - 2*x + 10*y^2", "temperatures": TEMPERATURES,
        "states": {"left": {"x": [-2.5, 0.0]}, "right": {"x": [0.0, 2.5]}}})


def _exact_nll(system, md, temperature_k) -> float:
    """Mean exact -ln p_T over the rows the flow holds out of ``md`` (quadrature normalization)."""
    _, validation = validation_split(md, 0.1)
    with system.energy() as reduced_energy:
        u = reduced_energy(torch.as_tensor(md["positions"].values[validation])).numpy()
    return float(np.mean(u * system.target_temperature_k / temperature_k + _quadrature_log_z(system, temperature_k)))


def _right_fraction(system, temperature_k) -> float:
    grid = np.linspace(-2.5, 2.5, 1001)
    x, y = np.meshgrid(grid, grid, indexing="ij")
    with system.energy() as reduced_energy:
        u = reduced_energy(torch.as_tensor(np.stack([x.ravel(), y.ravel()], axis=1))).numpy()
    p = np.exp(-(u - u.min()) * system.target_temperature_k / temperature_k)
    return float(p[x.ravel() > 0].sum() / p.sum())


@pytest.fixture(scope="module")
def annealed(double_well):
    md = [_exact_samples(double_well, t, 6000, seed) for seed, t in enumerate(TEMPERATURES)]
    settings = FlowSettings(n_layers=4, hidden=32, steps=600, batch_size=256, learning_rate=0.003, device="cpu",
                            anneal_steps=300, anneal_buffer_samples=1024, refine_buffer_refresh_every=25)
    torch.set_num_threads(1)
    generator, curves = fit_flow(double_well, md[0], settings, log=lambda _: None, annealing_md=md[1:])
    return md, generator, curves


def test_each_annealing_temperature_ends_at_the_exact_likelihood_of_its_own_held_out_md(double_well, annealed):
    md, _, curves = annealed
    # 6 records of maximum likelihood at 500 K, then 3 of refits at 400 K and 3 at 300 K.
    np.testing.assert_array_equal(curves["temperature"], [500.0] * 6 + [400.0] * 3 + [300.0] * 3)
    np.testing.assert_array_equal(curves["phase"], [0] * 6 + [2] * 6)
    assert np.isnan(curves["train_nll"][6:]).all()  # below the hottest, no MD frame is learnt
    last = {t: curves["validation_nll"][curves["temperature"] == t][-1] for t in TEMPERATURES}
    for k, temperature in enumerate(TEMPERATURES):
        # Measured 0.003-0.010 nats above the exact value; a flow left at the temperature above would be
        # 0.06 (400 K) to 0.07 (300 K) nats worse.
        assert last[temperature] == pytest.approx(_exact_nll(double_well, md[k], temperature), abs=0.03), temperature
    # The replay buffer of each temperature and the ESS monitor act at that temperature.
    assert (curves["buffer_ess_fraction"][6:] > 0.8).all() and (curves["ess_fraction"] > 0.9).all()
    assert curves_dataset(curves)["temperature"].attrs["units"] == "K"


def test_the_annealed_flow_holds_the_target_populations_without_weights(double_well, annealed):
    _, generator, _ = annealed
    samples = sample_flow_stage(double_well, generator, SamplingSettings(n_samples=20000, device="cpu"),
                                log=lambda _: None)
    right = float((samples["cv_values"].values[:, 0] > 0).mean())
    # 0.812 at 300 K against 0.696 at 500 K, where maximum likelihood left the flow.
    assert right == pytest.approx(_right_fraction(double_well, 300.0), abs=0.02)
    assert _right_fraction(double_well, 500.0) < _right_fraction(double_well, 300.0) - 0.1


def test_annealing_needs_the_hotter_md_and_is_not_for_the_temperature_conditioned_flow(double_well):
    md = [_exact_samples(double_well, t, 200, seed) for seed, t in enumerate(TEMPERATURES)]
    settings = FlowSettings(n_layers=2, hidden=8, steps=2, anneal_steps=2, device="cpu")
    with pytest.raises(ValueError, match="needs the MD of the other ladder temperatures"):
        fit_flow(double_well, md[0], settings, log=lambda _: None)
    with pytest.raises(ValueError, match="no temperature annealing"):
        fit_flow(double_well, md[0], settings, log=lambda _: None, ladder_md=md[1:])


def test_a_refit_whose_buffer_has_too_few_effective_samples_is_warned_about(double_well, monkeypatch):
    import boltzflow.stages.flow as flow_stage

    md = [_exact_samples(double_well, t, 200, seed) for seed, t in enumerate(TEMPERATURES)]
    settings = FlowSettings(n_layers=2, hidden=8, steps=2, anneal_steps=2, anneal_buffer_samples=64, device="cpu")
    for threshold, warned in ((0.0, False), (1.01, True)):  # an ESS/N of 1.01 is never reached
        monkeypatch.setattr(flow_stage, "ANNEAL_MIN_BUFFER_ESS", threshold)
        lines = []
        fit_flow(double_well, md[0], settings, log=lines.append, annealing_md=md[1:])
        warnings = [line for line in lines if line.startswith("WARNING")]
        assert len(warnings) == (2 if warned else 0)
        assert all("replay buffer's ESS/N" in line for line in warnings)


def test_a_shuffled_ladder_anneals_from_the_hottest_down_and_a_refinement_follows_at_the_target(double_well):
    md = [_exact_samples(double_well, t, 200, seed) for seed, t in enumerate(TEMPERATURES)]
    settings = FlowSettings(n_layers=2, hidden=8, steps=2, anneal_steps=2, refine_steps=2, refine_energy_weight=0.0,
                            anneal_buffer_samples=64, device="cpu")
    # The 500 K file first: the ladder of a toy need not be sorted.
    _, curves = fit_flow(double_well, md[0], settings, log=lambda _: None, annealing_md=[md[2], md[1]])
    np.testing.assert_array_equal(curves["temperature"], [500.0, 400.0, 300.0, 300.0])
    np.testing.assert_array_equal(curves["phase"], [0, 2, 2, 1])
    # The refinement learns the target's MD (its train NLL is that of the 300 K frames), not the hottest's.
    assert np.isfinite(curves["train_nll"][-1])
    cold = dict(md[0].attrs, temperature_k=250.0)
    with pytest.raises(ValueError, match="not above it"):
        fit_flow(double_well, md[0], settings, log=lambda _: None, annealing_md=[md[1].assign_attrs(cold)])


def test_each_temperature_holds_out_the_last_stretch_of_its_run_in_time(double_well):
    # The 400 K frames stored latest-first, the latest tenth moved far up the well's wall: measured as that
    # temperature's validation rows (as they must be), they cost far more nats than the same MD in time order.
    md = [_exact_samples(double_well, t, 400, seed) for seed, t in enumerate(TEMPERATURES)]
    positions = md[1]["positions"].values.copy()
    positions[:40] = [2.4, 1.4]
    settings = FlowSettings(n_layers=2, hidden=8, steps=2, anneal_steps=2, anneal_buffer_samples=64, device="cpu")
    nll = {}
    for order, time in (("latest first", np.arange(400.0)[::-1]), ("in time order", np.arange(400.0))):
        hot = md[1].assign(positions=(("sample", "cv"), positions), time=("sample", time))
        _, curves = fit_flow(double_well, md[0], settings, log=lambda _: None, annealing_md=[hot, md[2]])
        nll[order] = curves["validation_nll"][curves["temperature"] == 400.0][-1]
    assert nll["latest first"] > nll["in time order"] + 3


def test_with_data_weight_zero_the_data_only_measure_the_fit():
    from boltzflow.flows import SplineCouplingFlow

    def trained(data, data_weight, buffer):
        torch.manual_seed(0)
        flow = SplineCouplingFlow(2, n_layers=2, hidden=8)
        train_flow(flow, data, reduced_energy=lambda x: 0.5 * (x ** 2).sum(-1), steps=20, batch_size=32,
                   log=lambda _: None, log_every=10, data_weight=data_weight, buffer=buffer)
        return torch.cat([p.detach().flatten() for p in flow.parameters()])

    generator = torch.Generator().manual_seed(1)
    data_a, data_b = torch.randn(300, 2, generator=generator), 3 + torch.randn(300, 2, generator=generator)
    buffer = BufferSettings(weight=1.0, samples=64, refresh_every=5)
    torch.testing.assert_close(trained(data_a, 0.0, buffer), trained(data_b, 0.0, buffer))
    assert not torch.allclose(trained(data_a, 1.0, buffer), trained(data_b, 1.0, buffer))
    with pytest.raises(ValueError, match="needs another loss term"):
        trained(data_a, 0.0, None)


def _config(**flow):
    return {"systems": {"toy": {"type": "toy2d", "energy": "x^2 + y^2", "temperatures": [300],
                                "states": {"a": {"x": [-1, 0]}, "b": {"x": [0, 1]}}, "flow": flow,
                                "estimators": {"flow_ladder": False}}}}


def test_annealing_is_a_config_error_without_a_ladder_and_never_reaches_the_ladder_flow():
    schema = SCHEMA
    with pytest.raises(ConfigError, match=r"^systems\.toy\.flow\.anneal_steps: .*expected at least 2"):
        validate_config(_config(anneal_steps=100), schema)
    config = _config(anneal_steps=100)
    config["systems"]["toy"]["temperatures"] = [300, 400]
    validated = validate_config(config, schema)["systems"]["toy"]
    assert validated["flow"]["anneal_steps"] == 100 and validated["flow_ladder"]["anneal_steps"] == 0
    config = _config(anneal_steps=100)
    config["systems"]["toy"]["temperatures"] = [300, 400, 250]
    with pytest.raises(ConfigError, match=r"^systems\.toy\.flow\.anneal_steps: .*expected every other temperature above"):
        validate_config(config, schema)
    config = _config()
    config["systems"]["toy"].update(temperatures=[300, 400], flow_ladder={"anneal_steps": 10})
    with pytest.raises(ConfigError, match=r"^systems\.toy\.flow_ladder\.anneal_steps: "):
        validate_config(config, schema)
