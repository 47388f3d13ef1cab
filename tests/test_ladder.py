"""The temperature-conditioned flow and the f(T) it gives over a ladder: its densities are normalized at every
temperature, its √τ standardization is the harmonic scaling, and f(T) matches quadrature on a toy."""

import math

import numpy as np
import pytest
import torch
import xarray as xr

from boltzflow.flows import FlowAtTemperature, MixedSplineCouplingFlow, SplineCouplingFlow
from boltzflow.settings import AnalysisSettings, FlowSettings, SamplingSettings
from boltzflow.stages.flow import fit_flow, flow_at_temperature, load_flow, sample_ladder_stage, save_flow
from boltzflow.stages.ladder import ladder_estimates
from boltzflow.systems import toy_system_from_config
from boltzflow.units import kt_kj_mol


def _randomized(flow, seed=0, std=0.3):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.copy_(std * torch.randn(parameter.shape, generator=generator))
    return flow


@pytest.mark.parametrize("ratio", [0.6, 1.0, 2.5])
def test_conditioned_flow_is_a_normalized_density_at_every_temperature(ratio):
    flow = _randomized(SplineCouplingFlow(2, n_layers=4, hidden=16, temperature_conditioned=True,
                                          loc=torch.tensor([0.5, -0.2]), scale=torch.tensor([0.3, 0.8])),
                      std=0.15).double()
    grid = torch.linspace(-6.0, 6.0, 801, dtype=torch.float64)  # the density is below 1e-12 outside
    total = 0.0
    with torch.no_grad():
        for rows in grid.split(300):
            x, y = torch.meshgrid(rows, grid, indexing="ij")
            total += flow.log_prob(torch.stack([x.flatten(), y.flatten()], dim=1), ratio).exp().sum().item()
    assert total * (grid[1] - grid[0]).item() ** 2 == pytest.approx(1.0, abs=1e-3)


def test_untrained_conditioned_flow_is_the_gaussian_widened_by_the_root_of_the_temperature_ratio():
    # Identity couplings: q(x | T) = N(loc, scale² τ), the Boltzmann density of a harmonic well at T.
    loc, scale = torch.tensor([0.5, -0.2, 0.0]), torch.tensor([0.3, 0.8, 1.0])
    flow = MixedSplineCouplingFlow(3, circular=[False, False, True], temperature_conditioned=True, loc=loc, scale=scale)
    x = torch.tensor([[0.7, 0.1, 1.0], [0.2, -1.5, -2.0]])
    for ratio in (0.5, 1.0, 3.0):
        sd = scale[:2] * math.sqrt(ratio)
        expected = torch.distributions.Normal(loc[:2], sd).log_prob(x[:, :2]).sum(-1) - math.log(2 * math.pi)
        torch.testing.assert_close(flow.log_prob(x, ratio), expected)
    samples, log_q = flow.sample(20000, generator=torch.Generator().manual_seed(0), temperature_ratio=4.0)
    assert samples[:, :2].std(0).tolist() == pytest.approx((2 * scale[:2]).tolist(), rel=0.03)
    torch.testing.assert_close(flow.log_prob(samples, 4.0), log_q, atol=1e-5, rtol=1e-5)


def test_a_conditioned_flow_takes_one_temperature_per_row_and_needs_one():
    flow = _randomized(MixedSplineCouplingFlow(4, circular=[False, True, False, True], n_layers=4, hidden=16,
                                               temperature_conditioned=True)).double()
    ratios = torch.tensor([1.0, 2.0, 3.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    x, log_q = flow.sample(6, generator=torch.Generator().manual_seed(1), temperature_ratio=ratios)
    for row in range(6):
        torch.testing.assert_close(flow.log_prob(x[row:row + 1], float(ratios[row])), log_q[row:row + 1])
    view = FlowAtTemperature(flow, 2.0)
    # Rows with one more column carry their own ratio (ladder training data); rows without it are at the view's.
    torch.testing.assert_close(view.log_prob(torch.cat([x, ratios[:, None]], dim=1)), log_q)
    torch.testing.assert_close(view.log_prob(x), flow.log_prob(x, 2.0))
    with pytest.raises(ValueError, match="needs temperature_ratio"):
        flow.log_prob(x)
    with pytest.raises(ValueError, match="not temperature-conditioned"):
        SplineCouplingFlow(2).log_prob(torch.zeros(1, 2), 2.0)


def _ladder_samples(widths, temperatures=(300.0, 400.0, 600.0), n=20000, seed=0):
    """log w of x ~ N(0, (width √τ)²) against u_T = x² / 2τ, one row per temperature."""
    rng = np.random.default_rng(seed)
    temperatures = np.asarray(temperatures)
    log_w = []
    for width, ratio in zip(widths, temperatures / temperatures[0], strict=True):
        sd = width * math.sqrt(ratio)
        x = rng.normal(0.0, sd, n)
        log_w.append(-0.5 * x ** 2 / ratio + 0.5 * (x / sd) ** 2 + math.log(sd * math.sqrt(2 * math.pi)))
    return xr.Dataset({"log_w": (("temperature", "sample"), np.array(log_w))}, coords={"temperature": temperatures})


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # k̂ of constant weights
def test_the_error_of_f_includes_the_error_of_ln_z_at_the_target():
    from boltzflow import estimators

    # Exact proposals above the target: their ln Z has no error, so f's error there is the target's alone.
    samples = _ladder_samples([1.3, 1.0, 1.0], n=4000)
    settings = AnalysisSettings(bootstrap=50)
    ladder = ladder_estimates(samples, settings)
    se_target = estimators.bootstrap(estimators.log_partition_function, samples.log_w.values[0], settings.bootstrap,
                                     settings.seed).standard_error
    assert se_target > 0 and ladder.df.values[0] == 0
    np.testing.assert_allclose(ladder.df.values[1:], se_target, rtol=1e-9)
    samples = _ladder_samples([1.3, 1.3, 1.3], n=4000)
    se = np.array([estimators.bootstrap(estimators.log_partition_function, log_w, settings.bootstrap,
                                        settings.seed + k).standard_error
                   for k, log_w in enumerate(samples.log_w.values)])
    np.testing.assert_allclose(ladder_estimates(samples, settings).df.values[1:], np.hypot(se[1:], se[0]), rtol=1e-9)


def test_a_failure_at_the_target_makes_every_temperature_unreliable():
    ladder = ladder_estimates(_ladder_samples([0.3, 1.2, 1.2]), AnalysisSettings(bootstrap=20))
    assert not ladder.reliable.values.any()
    assert "k̂" in ladder.reason.values[0]
    assert list(ladder.reason.values[1:]) == ["300 K: " + ladder.reason.values[0]] * 2


def test_ladder_estimates_recover_the_harmonic_free_energies_and_flag_a_heavy_tail():
    # u_T(x) = x² / 2 at T_1, so Z(T) = √(2π τ) and f(T) = -ln Z(T) + ln Z(T_1) = -½ ln τ.
    rng = np.random.default_rng(0)
    temperatures = np.array([300.0, 400.0, 600.0])
    ratios = temperatures / temperatures[0]

    def samples(width):
        log_w = []
        for ratio in ratios:
            sd = width * math.sqrt(ratio)
            x = rng.normal(0.0, sd, 20000)
            log_q = -0.5 * (x / sd) ** 2 - math.log(sd * math.sqrt(2 * math.pi))
            log_w.append(-0.5 * x ** 2 / ratio - log_q)
        return xr.Dataset({"log_w": (("temperature", "sample"), np.array(log_w))},
                          coords={"temperature": temperatures})

    good = ladder_estimates(samples(1.2), AnalysisSettings(bootstrap=100))
    truth = -0.5 * np.log(ratios)
    assert np.all(np.abs(good.f.values - truth) < 4 * np.maximum(good.df.values, 1e-12))
    assert good.df.values[0] == 0 and np.all(good.df.values[1:] > 0)
    assert good.reliable.values.all() and np.all(good.ess_fraction.values > 0.5)
    # A proposal narrower than the target: heavy-tailed weights, k̂ > 0.7 at every temperature.
    narrow = ladder_estimates(samples(0.5), AnalysisSettings(bootstrap=20))
    assert not narrow.reliable.values.any()
    assert "k̂" in narrow.reason.values[0]


@pytest.fixture(scope="module")
def double_well():
    return toy_system_from_config("double_well", {
        "type": "toy2d", "energy": "8*(x^2 - 1)^2 - 2*x + 10*y^2", "temperatures": [300, 400, 500],
        "states": {"left": {"x": [-2.5, 0.0]}, "right": {"x": [0.0, 2.5]}}})


def _quadrature_log_z(system, temperature_k):
    grid = np.linspace(-2.5, 2.5, 1001)
    x, y = np.meshgrid(grid, grid, indexing="ij")
    points = torch.as_tensor(np.stack([x.ravel(), y.ravel()], axis=1))
    with system.energy() as reduced_energy:
        u = reduced_energy(points).numpy() * system.target_temperature_k / temperature_k
    return float(np.log(np.exp(-u).sum() * (grid[1] - grid[0]) ** 2))


def _exact_samples(system, temperature_k, n, seed):
    """Draws from exp(-u_T) on a fine grid (cells picked by mass, uniform inside): stand-in MD at T."""
    grid = np.linspace(-2.5, 2.5, 501)
    h = grid[1] - grid[0]
    x, y = np.meshgrid(grid, grid, indexing="ij")
    points = np.stack([x.ravel(), y.ravel()], axis=1)
    with system.energy() as reduced_energy:
        u = reduced_energy(torch.as_tensor(points)).numpy() * system.target_temperature_k / temperature_k
    p = np.exp(-(u - u.min()))
    rng = np.random.default_rng(seed)
    cells = rng.choice(len(points), size=n, p=p / p.sum())
    positions = points[cells] + rng.uniform(-h / 2, h / 2, size=(n, 2))
    return xr.Dataset({"positions": (("sample", "cv"), positions)}, attrs={"temperature_k": temperature_k})


def test_ladder_rows_hold_out_the_last_stretch_of_every_temperature_and_nothing_else(double_well):
    from boltzflow.stages.flow import _ladder_rows, validation_split
    from boltzflow.training import validation_count

    rng = np.random.default_rng(0)

    def md(temperature_k, n):
        time = rng.permutation(n).astype(float)  # x = time, y = temperature, stored out of time order
        positions = np.stack([time, np.full(n, temperature_k)], axis=1)
        return xr.Dataset({"positions": (("sample", "cv"), positions), "time": ("sample", time)},
                          attrs={"temperature_k": temperature_k})

    target, hot = md(300.0, 200), [md(400.0, 150), md(500.0, 120)]
    train_index, validation_index = validation_split(target, 0.1)
    positions = target["positions"].values[np.concatenate([train_index, validation_index])]
    coordinates = double_well.model_coordinates(positions)
    rows, fraction = _ladder_rows(double_well, coordinates.coordinate_map, coordinates.y.float(),
                                  len(validation_index), hot, 0.1)
    n_validation = validation_count(len(rows), fraction)
    training, validation = rows[:-n_validation].numpy(), rows[-n_validation:].numpy()
    assert len(rows) == 200 + 150 + 120
    for temperature_k, n in ((300.0, 200), (400.0, 150), (500.0, 120)):
        ratio = temperature_k / 300.0
        train_t = np.sort(training[np.isclose(training[:, 2], ratio)][:, 0])
        valid_t = np.sort(validation[np.isclose(validation[:, 2], ratio)][:, 0])
        assert np.all(np.isclose(training[np.isclose(training[:, 2], ratio)][:, 1], temperature_k))
        n_held = validation_count(n, 0.1)
        np.testing.assert_array_equal(train_t, np.arange(n - n_held))
        np.testing.assert_array_equal(valid_t, np.arange(n - n_held, n))


def test_ladder_flow_free_energies_match_quadrature_on_a_double_well(double_well, tmp_path):
    temperatures = double_well.temperatures_k
    md = [_exact_samples(double_well, t, 6000, seed) for seed, t in enumerate(temperatures)]
    settings = FlowSettings(n_layers=4, hidden=32, steps=600, batch_size=256, learning_rate=0.003, device="cpu")
    generator, curves = fit_flow(double_well, md[0], settings, log=lambda _: None, ladder_md=md[1:])
    assert generator.flow.temperature_conditioned
    # Every temperature's last tenth is held out: the validation NLL is finite and not far above training.
    assert np.isfinite(curves["validation_nll"]).all()
    save_flow(generator, tmp_path / "flow_ladder.pt")
    generator = load_flow(tmp_path / "flow_ladder.pt")
    samples = sample_ladder_stage(double_well, generator, SamplingSettings(ladder_samples=20000, device="cpu"),
                                  log=lambda _: None)
    ladder = ladder_estimates(samples, AnalysisSettings(bootstrap=50))
    log_z = np.array([_quadrature_log_z(double_well, t) for t in temperatures])
    truth = -(log_z - log_z[0])
    assert ladder.reliable.values.all(), ladder.reason.values
    assert np.all(np.abs(ladder.f.values - truth) < np.maximum(0.05, 3 * ladder.df.values)), (ladder.f.values, truth)
    assert np.all(ladder.ess_fraction.values > 0.3)
    # The model at the target is the same flow at ratio 1 (what samples/flow_ladder.nc draws from).
    x, log_q = flow_at_temperature(generator, 1.0).sample(5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(generator.flow.log_prob(x.float(), 1.0).double(), log_q, atol=1e-4, rtol=1e-4)
    assert kt_kj_mol(temperatures[0]) > 0


def test_a_ladder_flow_refines_with_a_replay_buffer_of_its_own_target_samples(double_well):
    # Ladder rows carry one more column (their temperature) than the flow's samples that fill the buffer.
    md = [_exact_samples(double_well, t, 400, seed) for seed, t in enumerate(double_well.temperatures_k)]
    settings = FlowSettings(n_layers=2, hidden=8, steps=2, batch_size=32, refine_steps=3, refine_energy_weight=0.0,
                            refine_buffer_weight=1.0, refine_buffer_samples=64, refine_buffer_refresh_every=1,
                            device="cpu")
    _, curves = fit_flow(double_well, md[0], settings, log=lambda _: None, ladder_md=md[1:])
    assert np.isfinite(curves["buffer_nll"][-1]) and curves["step"][-1] == 5


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_each_temperature_is_checked_on_its_absolute_ess_and_its_number_of_draws(monkeypatch):
    import boltzflow.reliability as reliability

    calls = []
    monkeypatch.setattr(reliability, "weight_checks", lambda k_hat, ess, n, settings: calls.append((k_hat, ess, n)) or [])
    samples = _ladder_samples([1.3, 1.0, 1.2], n=3000)
    ladder = ladder_estimates(samples, AnalysisSettings(bootstrap=5))
    assert [n for *_, n in calls] == [3000] * 3
    np.testing.assert_allclose([ess for _, ess, _ in calls], ladder.ess_fraction.values * 3000)
    np.testing.assert_allclose([k for k, *_ in calls], ladder.pareto_k.values)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_temperature_without_a_finite_weight_is_unreliable_and_says_so():
    samples = _ladder_samples([1.2, 1.2, 1.2], n=2000)
    samples["log_w"].values[2] = -np.inf
    ladder = ladder_estimates(samples, AnalysisSettings(bootstrap=10))
    assert ladder.reliable.values.tolist() == [True, True, False]
    assert "no finite weight" in ladder.reason.values[2]
