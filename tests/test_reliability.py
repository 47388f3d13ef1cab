"""Honest numbers: PSIS k̂ on weights of known tail index, effective sample counts, errors from independent
runs, the reliability verdict, quadrature against closed forms, and KL/JS at a common sample count."""

import numpy as np
import pytest
import xarray as xr
from scipy.special import erf

from boltzflow import estimators
from boltzflow.reliability import Diagnostics, pareto_k, pareto_k_threshold, verdict
from boltzflow.settings import AnalysisSettings
from boltzflow.stages.datasets import grid_coords, samples_dataset
from boltzflow.stages.quadrature import QuadratureError, quadrature_stage
from boltzflow.stages.reweight import reweight_stage
from boltzflow.stages.summary import summary_stage, summary_table
from boltzflow.systems import State, Toy2DSystem, kt_kj_mol

SETTINGS = AnalysisSettings(bootstrap=50)


@pytest.mark.parametrize("k", [0.3, 0.9, 1.4])
def test_pareto_k_recovers_the_tail_index_of_pareto_weights(k):
    # w = U^(-k) has a generalized Pareto tail with shape k exactly (survival function w^(-1/k)).
    u = np.random.default_rng(int(10 * k)).uniform(size=20000)
    estimate = pareto_k(-k * np.log(u))
    assert abs(estimate - k) < 0.2
    assert (estimate > 0.7) == (k > 0.7)


def test_pareto_k_reads_the_upper_tail_only():
    # A long lower tail of log-weights (bounded weights) is harmless: k̂ must be negative, not large.
    u = np.random.default_rng(0).uniform(size=20000)
    assert pareto_k(3.0 * np.log(u)) < 0
    assert pareto_k(np.r_[np.zeros(50), -np.inf]) == -np.inf
    assert np.isnan(pareto_k(np.zeros(5)))


def test_effective_samples_count_weight_per_bin():
    log_w = np.array([0.0, 0.0, np.log(2.0), -np.inf, np.log(4.0)])
    index = np.array([0, 0, 1, 1, -1])
    n_eff = estimators.binned_effective_samples(index, log_w, 3)
    np.testing.assert_allclose(n_eff, [2.0, 1.0, 0.0])  # bin 1: (2 + 0)² / 4 = 1; outside ignored
    assert estimators.effective_samples(np.log([1.0, 1.0, 1.0, 1.0])) == pytest.approx(4.0)
    assert estimators.effective_samples(np.full(3, -np.inf)) == 0.0
    # 60 copies of one sample and 40 distinct ones, equal weights: the copies are one sample carrying 60x the
    # weight, so Kish gives (100)² / (60² + 40) = 2.75, not 41.
    positions = np.concatenate([np.zeros((60, 2)), np.arange(80.0).reshape(40, 2) + 1])
    merged, first = estimators.merge_copies(np.zeros(100), estimators.copy_groups(positions))
    assert len(merged) == 41 and estimators.effective_samples(merged) == pytest.approx(100 ** 2 / (60 ** 2 + 40))
    index = np.r_[np.zeros(60, int), np.ones(40, int)]
    np.testing.assert_allclose(estimators.binned_effective_samples(index[first], merged, 2), [1.0, 40.0])


def test_pareto_k_is_nan_not_a_crash_for_short_or_tied_tails():
    rng = np.random.default_rng(2)
    for n in (10, 15, 24):  # arviz-stats needs at least 5 tail draws (n / 5)
        assert np.isnan(pareto_k(rng.normal(size=n)))
    tied = np.r_[rng.normal(size=100), np.zeros(40) + 5.0]  # the top 40 weights equal
    assert np.isnan(pareto_k(tied)) or pareto_k(tied) < 0.7
    assert pareto_k_threshold(100, 0.7) == pytest.approx(0.5)
    assert pareto_k_threshold(1e6, 0.7) == 0.7


def test_replicate_spread_is_the_standard_error_of_the_pooled_mean():
    # Each "run" estimates ln mean w from its own samples; the spread over runs / √R is the error of the mean.
    rng = np.random.default_rng(3)
    runs, n = 8, 400
    log_w = rng.normal(size=runs * n) * 0.3
    replicate = np.repeat(np.arange(runs), n)
    result = estimators.replicate_spread(lambda lw: [estimators.log_partition_function(lw)], log_w, replicate)
    per_run = [estimators.log_partition_function(log_w[replicate == r]) for r in range(runs)]
    # Widened by t_{R-1}(Φ(2)) / 2 so that ±2 errors covers 95.4 % with R - 1 degrees of freedom.
    from scipy.stats import norm, t
    widen = t.ppf(norm.cdf(2.0), runs - 1) / 2
    assert result.standard_error[0] == pytest.approx(widen * np.std(per_run, ddof=1) / np.sqrt(runs))
    assert result.estimate[0] == pytest.approx(estimators.log_partition_function(log_w))
    # A run that never visits a state makes that state's error infinite, not small.
    masks = [np.ones(runs * n, bool), replicate != 0]
    missed = estimators.replicate_spread(
        lambda lw: [estimators.log_partition_function(np.where(m, lw, -np.inf)) for m in masks], log_w, replicate)
    assert np.isfinite(missed.standard_error[0]) and missed.standard_error[1] == np.inf


def _diagnostics(**changes):
    base = dict(delta_f=np.array([0.0, 1.0]), delta_f_err=np.array([0.0, 0.1]), pareto_k=0.3,
                pareto_k_state=np.array([0.2, 0.2]), ess=1000.0, n_eff_state=np.array([500.0, 500.0]),
                integrator_error=np.zeros(2))
    return Diagnostics(**{**base, **changes})


@pytest.mark.parametrize("changes, states, fragment", [
    ({}, [True, True], ""),
    ({"pareto_k": 0.71}, [False, False], "PSIS k̂ 0.71 > 0.70"),
    ({"ess": 49.0}, [False, False], "ESS 49.0 < 50"),
    ({"n_eff_state": np.array([500.0, 19.0])}, [True, False], "19.0 effective samples in B < 20"),
    ({"n_eff_state": np.array([19.0, 500.0])}, [False, False], "effective samples in A"),
    ({"n_eff_state": np.array([500.0, 0.0])}, [True, False], "no weighted sample in B"),
    ({"pareto_k_state": np.array([0.2, 0.9])}, [True, False], "PSIS k̂ 0.90 in B"),
    ({"integrator_error": np.array([0.0, 0.06]), "integrator_measured": True}, [True, False], "integrator bias"),
    ({"integrator_error": np.array([0.0, -0.06]), "integrator_measured": True}, [True, False], "integrator bias"),
    ({"integrator_error": np.array([0.0, 0.04]), "integrator_measured": True}, [True, True], ""),
    ({"integrator_error": np.array([0.0, 0.02]), "integrator_error_err": np.array([0.0, 0.02]),
      "integrator_measured": True}, [True, False], "integrator bias"),
    ({"integrator_error": np.array([0.0, np.nan]), "integrator_measured": True}, [True, False], "not measured"),
    ({"integrator_error": np.array([0.0, np.nan])}, [True, True], ""),
    ({"pareto_k_state": np.array([0.2, 0.55]), "n_distinct_state": np.array([500.0, 100.0])}, [True, False],
     "PSIS k̂ 0.55 in B > 0.50"),
    ({"delta_f_err": np.array([0.0, np.inf])}, [True, False], "not finite"),
    ({"biased": "unweighted model"}, [False, False], "unweighted model"),
])
def test_verdict_fails_exactly_the_checks_at_their_thresholds(changes, states, fragment):
    reliable, reasons = verdict(_diagnostics(**changes), ["A", "B"], SETTINGS)
    assert reliable.tolist() == states
    assert fragment in reasons[1 if not states[1] else 0] if fragment else reasons == ["", ""]


def _gaussian_system(spring=300.0):
    states = (State("left", ({"x": (-np.inf, 0.1), "y": (-np.inf, np.inf)},)),
              State("right", ({"x": (0.1, np.inf), "y": (-np.inf, np.inf)},)))
    return Toy2DSystem("harmonic", f"0.5*{spring}*(x^2 + y^2)", (300.0,), states,
                       bounds={"x": (-0.3, 0.3), "y": (-0.3, 0.3)})


def _observables(system, bins=20):
    edges = {cv: np.linspace(*system.bounds[cv], bins + 1) for cv in system.cvs}
    observables = xr.Dataset(coords=grid_coords(system, edges))
    observables["F_xy"] = (("x", "y"), np.zeros((bins, bins)))
    return observables


def test_quadrature_matches_the_gaussian_closed_form():
    spring = 300.0
    system = _gaussian_system(spring)
    sigma = np.sqrt(kt_kj_mol(300.0) / spring)
    estimates = quadrature_stage(system, _observables(system), SETTINGS, log=lambda _: None)
    p_right = 0.5 * (1 - erf(0.1 / (sigma * np.sqrt(2))))
    expected = -np.log(p_right / (1 - p_right))
    # The midpoint rule's error is O(h²); the reported error (difference to half the resolution, about 3x
    # the error for an O(h²) rule) must cover it and stay small.
    error = estimates["delta_f_err"].values[0, 1]
    assert abs(estimates["delta_f"].values[0, 1] - expected) <= error + 1e-12 < 2e-3
    assert abs(estimates["log_z"].values[0] - np.log(2 * np.pi * sigma ** 2)) <= estimates["log_z_err"].values[0] + 1e-12 < 2e-3
    # The profile is -ln of the bin-averaged Gaussian density.
    centre = estimates["x"].values[10]
    density = np.exp(-centre ** 2 / (2 * sigma ** 2)) / np.sqrt(2 * np.pi * sigma ** 2)
    assert estimates["F_x"].values[0, 10] == pytest.approx(-np.log(density), abs=0.01)


def test_quadrature_refuses_an_energy_unbounded_below():
    states = (State("all", ({"x": (-np.inf, np.inf), "y": (-np.inf, np.inf)},)),)
    system = Toy2DSystem("hill", "-x^2-y^2", (300.0,), states, bounds={"x": (-1, 1), "y": (-1, 1)})
    with pytest.raises(QuadratureError, match="does not vanish"):
        quadrature_stage(system, _observables(system, 10), SETTINGS, log=lambda _: None)


def _weighted_gaussian_samples(system, n, scale, seed):
    """Samples of a Gaussian proposal of width scale·σ with their exact ln q and target u."""
    sigma = np.sqrt(kt_kj_mol(300.0) / 300.0) * scale
    x = np.random.default_rng(seed).normal(scale=sigma, size=(n, 2))
    log_q = -0.5 * (x ** 2).sum(1) / sigma ** 2 - np.log(2 * np.pi * sigma ** 2)
    return samples_dataset(system, x, log_q, system.reduced_energy(x))


def test_summary_marks_a_heavy_tailed_proposal_unreliable_and_a_good_one_reliable():
    system = _gaussian_system()
    observables = _observables(system)
    observables["delta_f"] = ("state", [0.0, 1.0])
    observables["delta_f_err"] = ("state", [0.0, 0.05])
    observables["n_eff_state"] = ("state", [1000.0, 1000.0])
    observables.attrs["n_samples"] = 2000
    quiet = lambda _: None  # noqa: E731
    good = reweight_stage(system, _weighted_gaussian_samples(system, 4000, 1.3, 1), observables, "flow", SETTINGS, quiet)
    # A proposal narrower than the target: weights exp(+x²) grow without bound, k̂ > 0.7.
    bad = reweight_stage(system, _weighted_gaussian_samples(system, 4000, 0.5, 2), observables, "score_exact",
                         SETTINGS, quiet)
    exact = quadrature_stage(system, observables, SETTINGS, quiet)
    summary, profiles, surface = summary_stage(system, observables, [exact, good, bad], {}, SETTINGS)
    reliable = summary["reliable"].astype(bool)
    assert reliable.sel(estimator="flow").all() and not reliable.sel(estimator="score_exact").any()
    assert not reliable.sel(estimator="flow_raw").any()
    assert summary.attrs["reference"] == "quadrature"
    assert abs(float(summary["z_score"].sel(estimator="flow", state="right"))) < 3
    assert summary["pareto_k"].sel(estimator="score_exact") > 0.7
    table = summary_table(summary)
    assert table["reliable"].dtype == bool and "PSIS" in table.set_index("estimator").loc["score_exact", "unreliable_reason"].iloc[0]
    assert np.isinf(profiles["n_eff_x"].sel(estimator="quadrature")).all()
    assert (surface["n_eff_xy"].sel(estimator="flow") >= 0).all()


def test_the_k_hat_threshold_counts_the_draws_the_tail_was_estimated_from():
    # flow_mcmc's k̂ is its 4,000 proposals' (threshold 0.70), not its 50 distinct chain states' (0.41).
    common = dict(delta_f=np.array([0.0, 1.0]), delta_f_err=np.array([0.0, 0.1]), pareto_k=0.6,
                  pareto_k_state=np.array([0.6, 0.6]), ess=np.nan, n_eff_state=np.array([100.0, 100.0]),
                  integrator_error=np.zeros(2), n_distinct=50.0, n_distinct_state=np.array([50.0, 50.0]))
    reliable, _ = verdict(Diagnostics(**common, tail_of="proposals'", tail_n_distinct=4000.0,
                                      tail_n_distinct_state=np.array([4000.0, 4000.0])), ["a", "b"], SETTINGS)
    assert reliable[1]
    reliable, reasons = verdict(Diagnostics(**common), ["a", "b"], SETTINGS)
    assert not reliable[1] and "PSIS k̂ 0.60 > 0.41" in reasons[1]


def test_independence_mh_is_judged_by_the_tails_of_its_proposals_weights(tmp_path):
    from dataclasses import replace

    from boltzflow.io import write_netcdf
    from boltzflow.settings import MCMCSettings
    from boltzflow.stages.samplers import mcmc_stage

    system = _gaussian_system()
    observables = _observables(system)
    quiet = lambda _: None  # noqa: E731
    settings = MCMCSettings(chains=20, burn_in=10, seed=0)
    verdicts = {}
    for scale, seed in ((1.3, 1), (0.5, 2)):
        proposals = _weighted_gaussian_samples(system, 4000, scale, seed)
        # The rule's system has no states (they would rerun the sampler); the chains keep their proposals.
        chains = mcmc_stage(replace(system, states=()), proposals, settings, quiet)
        write_netcdf(chains, tmp_path / f"flow_mcmc_{scale}.nc")
        estimates = reweight_stage(system, chains, observables, "flow_mcmc", SETTINGS, quiet)
        assert float(estimates["pareto_k"].sel(estimator="flow_mcmc")) == pytest.approx(
            pareto_k(proposals["log_w"].values))
        verdicts[scale] = (estimates["reliable"].sel(estimator="flow_mcmc").values.astype(bool),
                           estimates["unreliable_reason"].sel(estimator="flow_mcmc").values,
                           float(estimates["pareto_k"].sel(estimator="flow_mcmc")))
    # A proposal wider than the target: bounded weights, the chains mix; narrower: weights exp(+x²/2 ...)
    # without bound, the chains stick at the largest, and the verdict says whose tail it is.
    assert verdicts[1.3][0].all() and verdicts[1.3][2] < 0.5
    assert not verdicts[0.5][0].any() and verdicts[0.5][2] > 0.7
    assert all(reason.startswith("proposals' PSIS k̂") for reason in verdicts[0.5][1])


def test_divergences_at_a_common_sample_count_do_not_favour_more_samples():
    # Two perfect samplers of one histogram, one with 50x more samples: the plug-in JS of the smaller
    # is far larger; drawn at a common count, both score the same noise floor.
    rng = np.random.default_rng(0)
    truth = rng.dirichlet(np.ones(100))
    small, large = rng.multinomial(500, truth), rng.multinomial(25000, truth)
    plug_in = [estimators.histogram_divergences(truth, h)[1] for h in (small, large)]
    assert plug_in[0] > 5 * plug_in[1]
    common = [estimators.resampled_divergences(truth, h, 500, 50, seed=1)[1] for h in (small, large)]
    floor = estimators.resampled_divergences(truth, truth, 500, 50, seed=1)[1]
    assert common[1] == pytest.approx(floor, rel=0.15)
    assert common[0] < 2.2 * floor  # the small sample's own noise on top of the common floor


def test_replicate_errors_cover_the_truth_at_two_sigma_with_four_runs():
    # The mean of R = 4 normal runs, 2,000 trials: ±2 errors must cover the true mean about 95 % of the time
    # (without the t widening it would be 86 %).
    rng = np.random.default_rng(11)
    replicate = np.repeat(np.arange(4), 50)
    covered = 0
    for _ in range(2000):
        values = rng.normal(size=200)
        result = estimators.replicate_spread(lambda v: [np.mean(v[np.isfinite(v)])], values, replicate)
        covered += abs(result.estimate[0]) <= 2 * result.standard_error[0]
    assert 0.93 < covered / 2000 < 0.975


@pytest.mark.parametrize("k_hat, ess, n, expected", [
    (0.70, 1000.0, 10_000, []),  # at the threshold: passes
    (0.71, 1000.0, 10_000, ["PSIS k̂ 0.71 > 0.70"]),
    (0.55, 1000.0, 100, ["PSIS k̂ 0.55 > 0.50"]),  # the threshold falls with the number of draws
    (0.45, 1000.0, 100, []),
    (np.nan, 1000.0, 100, []), (-np.inf, 1000.0, 100, []),
    (0.3, 50.0, 10_000, []),  # at min_ess: passes
    (0.3, 49.9, 10_000, ["ESS 49.9 < 50"]),
    (0.3, np.nan, 10_000, []),
    (0.8, 10.0, 10_000, ["PSIS k̂ 0.80 > 0.70", "ESS 10.0 < 50"]),
])
def test_weight_checks_fail_exactly_at_their_thresholds(k_hat, ess, n, expected):
    from boltzflow.reliability import weight_checks

    assert weight_checks(k_hat, ess, n, SETTINGS) == expected
