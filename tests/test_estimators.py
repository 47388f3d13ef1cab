"""Estimators against analytic truths: MBAR on a harmonic well, Kish ESS, bootstrap, importance sampling."""

import numpy as np
import pytest
import xarray as xr
from scipy.special import erf, erfc

from boltzflow import estimators
from boltzflow.stages.mbar import mbar_stage
from boltzflow.systems import State, Toy2DSystem, kt_kj_mol

SPRING = 200.0  # kJ/mol/nm^2


def _harmonic_samples(temperature, n, rng):
    """Exact Boltzmann samples of E = k (x² + y²) / 2: Gaussian with variance kT / k per coordinate."""
    xy = rng.normal(scale=np.sqrt(kt_kj_mol(temperature) / SPRING), size=(n, 2))
    energy = 0.5 * SPRING * (xy ** 2).sum(1)
    return xr.Dataset({"positions": (("sample", "cv"), xy), "energy": ("sample", energy)},
                      attrs={"temperature_k": temperature})


def test_mbar_recovers_harmonic_free_energies():
    temperatures = (300.0, 360.0, 450.0, 600.0)
    states = (State("left", ({"x": (-np.inf, 0.0), "y": (-np.inf, np.inf)},)),
              State("far_right", ({"x": (0.05, np.inf), "y": (-np.inf, np.inf)},)))
    system = Toy2DSystem("harmonic", f"0.5*{SPRING}*(x^2 + y^2)", temperatures, states,
                         bounds={"x": (-0.4, 0.4), "y": (-0.4, 0.4)})
    rng = np.random.default_rng(1)
    md = [_harmonic_samples(t, 4000, rng) for t in temperatures]
    ladder, observables = mbar_stage(system, md, bins=20, log=lambda _: None)

    # Z(T) = 2π kT / k, so f_k - f_0 = -ln(T_k / T_0).
    expected = -np.log(np.array(temperatures) / temperatures[0])
    error = np.abs(ladder["f"].values - expected)
    assert np.all(error <= 4 * ladder["df"].values + 1e-9), (ladder["f"].values, expected)
    assert ladder["df"].values[1:].max() < 0.05

    # P(x >= a) / P(x < 0) at the target: erfc(a / (σ√2)) / 1 with σ² = kT / k.
    sigma = np.sqrt(kt_kj_mol(300.0) / SPRING)
    delta_f = -np.log(erfc(0.05 / (sigma * np.sqrt(2))))
    got, err = observables["delta_f"].values[1], observables["delta_f_err"].values[1]
    assert abs(got - delta_f) < 4 * err and err < 0.05

    # The x profile is -ln of the Gaussian density, exactly known.
    centres = observables["x"].values
    truth = 0.5 * centres ** 2 / sigma ** 2 + 0.5 * np.log(2 * np.pi * sigma ** 2)
    profile, perr = observables["F_x"].values, observables["dF_x"].values
    core = np.abs(centres) < 1.5 * sigma
    # Bin-averaged density differs from the centre value by O(width²); 0.05 kT covers it here.
    assert np.all(np.abs(profile[core] - truth[core]) < 4 * perr[core] + 0.05)


@pytest.mark.parametrize("gap_nm, warned", [(0.05, True), (0.005, False)])
def test_mbar_measures_and_warns_about_the_share_of_the_ensemble_in_no_state(gap_nm, warned):
    # States x < 0 and x >= gap leave 0 <= x < gap in no state: at the target P = erf(gap / (σ√2)) / 2.
    temperatures = (300.0, 400.0)
    states = (State("left", ({"x": (-np.inf, 0.0), "y": (-np.inf, np.inf)},)),
              State("right", ({"x": (gap_nm, np.inf), "y": (-np.inf, np.inf)},)))
    system = Toy2DSystem("harmonic", f"0.5*{SPRING}*(x^2 + y^2)", temperatures, states,
                         bounds={"x": (-0.4, 0.4), "y": (-0.4, 0.4)})
    rng = np.random.default_rng(2)
    lines = []
    _, observables = mbar_stage(system, [_harmonic_samples(t, 4000, rng) for t in temperatures], bins=20,
                                log=lines.append)
    sigma = np.sqrt(kt_kj_mol(300.0) / SPRING)
    expected = 0.5 * erf(gap_nm / (sigma * np.sqrt(2)))
    fraction = observables["fraction_in_no_state"]
    # The binomial standard error of a probability from ~8000 samples is below 0.005.
    assert abs(float(fraction) - expected) < 0.02
    assert fraction.attrs["units"] == "1"
    warnings = [line for line in lines if line.startswith("WARNING")]
    assert warnings == ([f"WARNING: {100 * float(fraction):.0f} % of the 300 K ensemble (MBAR) lies in no state "
                         "of harmonic; ΔF only compares the states listed"] if warned else [])


@pytest.mark.parametrize("weights, expected", [
    ([1.0, 1.0, 1.0, 1.0], 1.0),
    ([1.0, 0.0, 0.0, 0.0], 0.25),
    ([1.0, 2.0], 0.9),          # (1 + 2)² / (2 · (1 + 4))
    ([3.0, 1.0, 0.0], 16 / 30),  # 4² / (3 · 10)
])
def test_kish_ess_on_known_weights(weights, expected):
    with np.errstate(divide="ignore"):
        log_w = np.log(np.array(weights)) + 123.4  # invariant under a common scale
    assert estimators.ess_fraction(log_w) == pytest.approx(expected, rel=1e-12)


def test_log_weights_drop_non_finite_samples():
    log_w, dropped = estimators.log_weights(np.array([1.0, np.inf, np.nan, 2.0]), np.array([0.0, 0.0, 0.0, -np.inf]))
    assert dropped == 3
    assert log_w[0] == -1.0 and np.all(np.isneginf(log_w[1:]))
    # Dropped samples count in N but carry no weight: ESS/N = 1/4 with one weight left.
    assert estimators.ess_fraction(log_w) == pytest.approx(0.25)


def test_kish_ess_gives_non_finite_log_weights_no_weight():
    assert estimators.ess_fraction(np.array([0.0, np.nan, np.inf, -np.inf])) == pytest.approx(0.25)
    assert estimators.ess_fraction(np.full(3, -np.inf)) == 0.0
    assert estimators.ess_fraction(np.array([np.nan, np.inf])) == 0.0


def test_importance_sampling_matches_quadrature_with_bootstrap_error():
    """A broad Gaussian proposal reweighted to a tilted double well: ΔF and ln Z against quadrature."""
    rng = np.random.default_rng(3)
    n, scale = 40000, 1.2

    def u(x):  # reduced energy of a tilted double well in x (the y part is a unit Gaussian)
        return 3 * (x[:, 0] ** 2 - 1) ** 2 - 0.8 * x[:, 0] + 0.5 * x[:, 1] ** 2

    x = rng.normal(scale=scale, size=(n, 2))
    log_q = -0.5 * (x ** 2).sum(1) / scale ** 2 - np.log(2 * np.pi * scale ** 2)
    log_w, _ = estimators.log_weights(u(x), log_q)
    states = (State("left", ({"x": (-np.inf, 0.0), "y": (-np.inf, np.inf)},)),
              State("right", ({"x": (0.0, np.inf), "y": (-np.inf, np.inf)},)))
    cvs = {"x": x[:, 0], "y": x[:, 1]}

    grid = np.linspace(-4, 4, 40001)
    density = np.exp(-(3 * (grid ** 2 - 1) ** 2 - 0.8 * grid))
    dx = grid[1] - grid[0]
    z_left, z_right = density[grid < 0].sum() * dx, density[grid >= 0].sum() * dx
    true_delta_f = -np.log(z_right / z_left)
    true_log_z = np.log((z_left + z_right) * np.sqrt(2 * np.pi))

    def statistic(lw):
        return np.r_[estimators.state_delta_f(lw, cvs, states), estimators.log_partition_function(lw)]

    result = estimators.bootstrap(statistic, log_w, replicates=100, seed=0)
    assert abs(result.estimate[1] - true_delta_f) < 4 * result.standard_error[1]
    assert abs(result.estimate[2] - true_log_z) < 4 * result.standard_error[2]
    assert 0 < result.standard_error[1] < 0.05


def test_bootstrap_error_of_a_mean_matches_the_analytic_standard_error():
    rng = np.random.default_rng(5)
    w = rng.exponential(size=5000)
    result = estimators.bootstrap(estimators.log_partition_function, np.log(w), replicates=400, seed=1)
    analytic = w.std(ddof=1) / np.sqrt(len(w)) / w.mean()  # delta method for ln(mean w)
    assert result.standard_error == pytest.approx(analytic, rel=0.15)


def test_state_delta_f_is_nan_when_the_reference_state_is_empty():
    from boltzflow.systems import State

    states = (State("ref", ({"x": (0.0, 1.0)},)), State("other", ({"x": (1.0, 2.0)},)))
    cvs = {"x": np.array([1.5, 1.6])}
    assert np.isnan(estimators.state_delta_f(np.zeros(2), cvs, states)).all()


def test_trimmed_log_weights_clip_only_the_top_fraction():
    log_w = np.log(np.arange(1.0, 1001.0))
    trimmed = estimators.trimmed_log_weights(log_w, 0.002)
    assert np.array_equal(trimmed[:998], log_w[:998])
    assert np.allclose(trimmed[998:], np.log(998.0))
    assert estimators.ess_fraction(trimmed) > estimators.ess_fraction(log_w)


def test_histogram_divergences_match_hand_computed_values():
    p = np.array([0.5, 0.5, 0.0])
    q = np.array([0.25, 0.5, 0.25])
    kl, js = estimators.histogram_divergences(p, q)
    assert kl == pytest.approx(0.5 * np.log(2.0))
    m = 0.5 * (p + q)
    expected_js = 0.5 * (0.5 * np.log(0.5 / m[0]) + 0.5 * np.log(0.5 / m[1])) + 0.5 * (
        0.25 * np.log(0.25 / m[0]) + 0.5 * np.log(0.5 / m[1]) + 0.25 * np.log(0.25 / m[2]))
    assert js == pytest.approx(expected_js)
    assert estimators.histogram_divergences(p, p) == (0.0, 0.0)




def test_mbar_on_correlated_frames_scales_its_errors_by_the_statistical_inefficiency():
    # Each independent sample repeated g times (perfectly correlated frames, as replica exchange records
    # them) and marked with g: the same estimates, and the errors of the independent samples, not 1/√g of them.
    temperatures = (300.0, 450.0)
    states = (State("left", ({"x": (-np.inf, 0.0), "y": (-np.inf, np.inf)},)),
              State("right", ({"x": (0.0, np.inf), "y": (-np.inf, np.inf)},)))
    system = Toy2DSystem("harmonic", f"0.5*{SPRING}*(x^2 + y^2)", temperatures, states,
                         bounds={"x": (-0.4, 0.4), "y": (-0.4, 0.4)})
    rng = np.random.default_rng(5)
    independent = [_harmonic_samples(t, 1500, rng) for t in temperatures]
    g = 4
    repeated = []
    for i, ds in enumerate(independent):
        copies = ds.isel(sample=np.repeat(np.arange(ds.sizes["sample"]), g))
        copies["independent"] = ("sample", (np.arange(copies.sizes["sample"]) % g == 0).astype(np.int8))
        # The largest g over the ladder scales every error (here the first file's; the second claims less).
        copies.attrs["statistical_inefficiency_frames"] = float(g if i == 0 else g / 2)
        repeated.append(copies)
    quiet = lambda _: None  # noqa: E731
    ladder_1, observables_1 = mbar_stage(system, independent, bins=10, log=quiet)
    ladder_g, observables_g = mbar_stage(system, repeated, bins=10, log=quiet)
    np.testing.assert_allclose(observables_g["delta_f"], observables_1["delta_f"], atol=1e-6)
    np.testing.assert_allclose(observables_g["delta_f_err"], observables_1["delta_f_err"], rtol=1e-3, atol=1e-8)
    np.testing.assert_allclose(ladder_g["df"], ladder_1["df"], rtol=1e-3, atol=1e-9)
    assert observables_g.attrs["statistical_inefficiency_frames"] == g
    np.testing.assert_allclose(observables_g["n_eff_state"], observables_1["n_eff_state"], rtol=1e-6)
