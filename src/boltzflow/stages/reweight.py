"""Importance reweighting: estimates from any model's weighted samples, with standard errors, diagnostics of
the weights and a reliability verdict per state."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import xarray as xr

from boltzflow import estimators
from boltzflow.estimator_table import BY_NAME
from boltzflow.reliability import Diagnostics, pareto_k, verdict
from boltzflow.settings import AnalysisSettings
from boltzflow.stages.datasets import edges_from, grid_coords, surface_effective_name, surface_name, variable

UNWEIGHTED = "unweighted model (biased by construction; shown to measure what reweighting removes)"


def reweight_stage(system, samples: xr.Dataset, observables: xr.Dataset, estimator: str,
                   settings: AnalysisSettings, log=print) -> xr.Dataset:
    """Importance-reweighted estimates from the samples of ``estimator`` (a name in the estimator table),
    plus the unweighted model as ``{estimator}_raw`` where the table asks for that companion.

    Standard errors: from the spread of independent runs when the samples carry a ``replicate`` label (SMC),
    else a bootstrap over ``settings.bootstrap`` resamples (whole chains for MCMC). ESS/N is reported raw
    and with the top ``settings.trim_fraction`` of log-weights clipped (``ess_fraction_trimmed``). Every
    state gets PSIS k̂, its effective (distinct) sample count and a reliability verdict with its reasons.
    The KL and JS divergences compare the 2D histogram over the first two CVs with MBAR's, at a common
    number of samples (``settings.divergence_samples``).
    """
    spec = BY_NAME[estimator]
    trim_fraction = settings.trim_fraction
    positions = samples["positions"].values
    cvs = system.cv_values(positions)
    log_w = samples["log_w"].values
    n = len(log_w)
    n_dropped = int(samples.attrs["n_nonfinite"])
    if n_dropped:
        log(f"dropped {n_dropped} of {n} samples with non-finite energy or density, or outside the coordinate "
            "map (zero weight)")
    edges = {cv: edges_from(observables, cv) for cv in system.cvs}

    def statistics(lw):
        parts = [estimators.state_delta_f(lw, cvs, system.states), [estimators.log_partition_function(lw)]]
        parts += [estimators.weighted_profile(cvs[cv], lw, edges[cv]) for cv in system.cvs]
        return np.concatenate(parts)

    # The raw model is every sample with equal weight, whatever its energy.
    raw = np.zeros(n)
    weightings = [log_w, raw] if spec.raw_companion else [log_w]
    names = [estimator, f"{estimator}_raw"][:len(weightings)]
    if "replicate" in samples:
        replicate = samples["replicate"].values
        log(f"standard errors from the spread of {len(np.unique(replicate))} independent runs")
        results = [estimators.replicate_spread(statistics, lw, replicate) for lw in weightings]
    else:
        # MCMC states are correlated along each chain: the bootstrap resamples whole chains.
        groups = samples["chain"].values if "chain" in samples else None
        results = [estimators.bootstrap(statistics, lw, settings.bootstrap, settings.seed, groups) for lw in weightings]
    ess = [estimators.ess_fraction(log_w), np.nan][:len(weightings)]
    ess_trimmed = [estimators.ess_fraction(estimators.trimmed_log_weights(log_w, trim_fraction)), np.nan]
    ess_trimmed = ess_trimmed[:len(weightings)]
    if not spec.weighted:
        # MCMC states: equal weights by construction, so a Kish ESS says nothing about them.
        ess, ess_trimmed = [np.nan] * len(weightings), [np.nan] * len(weightings)
    log(f"{estimator}: ESS/N = {ess[0]:.4f} raw, {ess_trimmed[0]:.4f} with the top {trim_fraction:.2%} "
        f"of log-weights trimmed, over {n} samples")
    acceptance = [float(samples.attrs.get("acceptance_rate", np.nan))] + [np.nan] * (len(weightings) - 1)

    n_states = len(system.states)
    values = np.stack([r.estimate for r in results])
    errors = np.stack([r.standard_error for r in results])
    log_z = values[:, n_states].copy()
    log_z_err = errors[:, n_states].copy()
    log_z[1:], log_z_err[1:] = np.nan, np.nan  # an unweighted model has no ln Z estimate
    if not spec.weighted:
        log_z[:], log_z_err[:] = np.nan, np.nan

    # Diagnostics and verdict. Copies of one sample (SMC resampling, rejected MCMC moves) are merged into
    # one sample carrying their summed weight before effective counts and tails are computed.
    groups = estimators.copy_groups(positions)
    masks = [state.contains(cvs) for state in system.states]
    # Score models measure their ODE integrator's bias (NaN: not measured, e.g. a state the check missed);
    # flows have exact densities (no variable, no bias).
    measured = "integrator_error" in samples
    integrator_error = samples["integrator_error"].values if measured else np.zeros(n_states)
    integrator_error_err = (samples["integrator_error_err"].values if "integrator_error_err" in samples
                            else np.zeros(n_states))
    # An independence MH sampler is judged by the tails of its proposals' weights (proposal_tails).
    tails = proposal_tails(system, samples) if "proposal_log_w" in samples else {}
    diagnostics = []
    for index, lw in enumerate(weightings):
        merged, first = estimators.merge_copies(lw, groups)
        in_state = [np.where(mask[first], merged, -np.inf) for mask in masks]
        weighted = spec.weighted and index == 0
        diagnostic = Diagnostics(
            delta_f=values[index, :n_states], delta_f_err=errors[index, :n_states],
            pareto_k=pareto_k(merged) if weighted else np.nan,
            pareto_k_state=np.array([pareto_k(w) if weighted else np.nan for w in in_state]),
            ess=estimators.effective_samples(merged) if weighted else np.nan,
            n_eff_state=np.array([estimators.effective_samples(w) for w in in_state]),
            n_distinct=float(np.isfinite(merged).sum()),
            n_distinct_state=np.array([float(np.isfinite(w).sum()) for w in in_state]),
            integrator_error=integrator_error if index == 0 else np.zeros(n_states),
            integrator_error_err=integrator_error_err if index == 0 else np.zeros(n_states),
            integrator_measured=measured and index == 0,
            biased=UNWEIGHTED if index else "")
        diagnostics.append(replace(diagnostic, **tails) if index == 0 else diagnostic)
    state_names = [s.name for s in system.states]
    verdicts = [verdict(d, state_names, settings) for d in diagnostics]
    for name, d, (reliable, reasons) in zip(names, diagnostics, verdicts):
        for state, ok, reason, value, error in zip(state_names, reliable, reasons, d.delta_f, d.delta_f_err):
            log(f"{name} ΔF({state}) = {value:.3f} ± {error:.3f} kT: " + ("reliable" if ok else f"UNRELIABLE ({reason})"))

    dataset = xr.Dataset(coords={**grid_coords(system, edges), "estimator": names})
    error_name = "standard error from the spread of independent runs" if "replicate" in samples else "bootstrap standard error"
    dataset["delta_f"] = variable(("estimator", "state"), values[:, :n_states], "kT",
                              "state free energy relative to the first state")
    dataset["delta_f_err"] = variable(("estimator", "state"), errors[:, :n_states], "kT", f"{error_name} of delta_f")
    dataset["ess_fraction"] = variable("estimator", ess, "1", "Kish effective sample size / N (raw weights)")
    dataset["ess_fraction_trimmed"] = variable("estimator", ess_trimmed, "1",
                                           f"Kish ESS / N with the top {trim_fraction:g} of log-weights clipped")
    dataset["log_z"] = variable("estimator", log_z, "1", system.log_z_long_name)
    dataset["log_z_err"] = variable("estimator", log_z_err, "1", f"{error_name} of log_z")
    dataset["n_samples"] = variable("estimator", [n] * len(names), "1", "number of model samples")
    dataset["n_dropped"] = variable("estimator", [n_dropped] + [0] * (len(names) - 1), "1",
                                    "samples with zero weight: non-finite energy or density, or outside the coordinate map")
    dataset["acceptance_rate"] = variable("estimator", acceptance, "1", "Metropolis-Hastings acceptance rate (SMC moves, MCMC)")
    dataset["pareto_k"] = variable("estimator", [d.pareto_k for d in diagnostics], "1",
                                   "PSIS k-hat of all log-weights (> 0.7: the weights' variance is practically "
                                   "infinite; flow_mcmc: of its proposals' weights)")
    dataset["pareto_k_state"] = variable(("estimator", "state"), [d.pareto_k_state for d in diagnostics], "1",
                                         "PSIS k-hat of the log-weights inside the state (flow_mcmc: of its "
                                         "proposals' weights)")
    dataset["n_eff_state"] = variable(("estimator", "state"), [d.n_eff_state for d in diagnostics], "1",
                                      "effective samples in the state: Kish, with copies of a sample merged")
    dataset["n_distinct_state"] = variable(("estimator", "state"), [d.n_distinct_state for d in diagnostics], "1",
                                           "distinct samples with weight in the state (copies count once)")
    dataset["integrator_error"] = variable(("estimator", "state"), [d.integrator_error for d in diagnostics], "kT",
                                           "estimated bias of delta_f from the ODE integrator (0: exact density)")
    dataset["reliable"] = variable(("estimator", "state"), np.array([v[0] for v in verdicts]).astype(np.int8), "1",
                                   "1 if the estimate passes every reliability check, else 0 (see unreliable_reason)")
    dataset["unreliable_reason"] = variable(("estimator", "state"), np.array([v[1] for v in verdicts], dtype=object), "",
                                            "the reliability checks the estimate fails ('' when reliable)")
    start = n_states + 1
    for cv in system.cvs:
        stop = start + len(edges[cv]) - 1
        dataset[f"F_{cv}"] = variable(("estimator", cv), values[:, start:stop], "kT",
                                      f"free-energy profile -ln(p / bin width) along {cv}")
        dataset[f"dF_{cv}"] = variable(("estimator", cv), errors[:, start:stop], "kT", f"{error_name} of F_{cv}")
        index = estimators.bin_index(cvs[cv], edges[cv])
        dataset[f"n_eff_{cv}"] = variable(("estimator", cv), [
            bin_effective_samples(index, lw, groups, len(edges[cv]) - 1) for lw in weightings], "1",
            "effective samples in the bin: Kish, with copies of a sample merged")
        start = stop
    first, second = system.cvs[:2]
    surfaces = [estimators.weighted_surface(cvs[first], cvs[second], lw, edges[first], edges[second])
                for lw in weightings]
    dataset[surface_name(system)] = variable(("estimator", first, second), surfaces, "kT",
                                         f"free-energy surface -ln(p / bin area) over ({first}, {second})")
    n_first, n_second = len(edges[first]) - 1, len(edges[second]) - 1
    flat = estimators.surface_bin_index(cvs[first], cvs[second], edges[first], edges[second])
    dataset[surface_effective_name(system)] = variable(("estimator", first, second), [
        bin_effective_samples(flat, lw, groups, n_first * n_second).reshape(n_first, n_second) for lw in weightings],
        "1", "effective samples in the bin: Kish, with copies of a sample merged")
    divergences = [surface_divergences(observables, system, surface, settings) for surface in surfaces]
    dataset["kl_divergence"] = variable("estimator", [d[0] for d in divergences], "1", divergence_long_name("KL", system, settings))
    dataset["js_divergence"] = variable("estimator", [d[1] for d in divergences], "1", divergence_long_name("JS", system, settings))
    dataset.attrs["n_nonfinite"] = n_dropped
    return dataset


def proposal_tails(system, samples: xr.Dataset) -> dict:
    """PSIS k̂ of an independence sampler's proposals' log-weights, of all and inside each state, with the
    draws each was taken over: the tail fields of its :class:`~boltzflow.reliability.Diagnostics`.

    An independence Metropolis-Hastings chain is geometrically (then also uniformly) ergodic only if the
    weights p/q are bounded (Mengersen & Tweedie 1996): a chain that reaches a proposal of large weight stays
    there for a number of steps that grows with the weight, so a heavy-tailed weight distribution makes the
    chains stick and their spread understate the error. Over a fixed set of proposals the chains are a
    correlated resampling of the same weights, never more trustworthy than importance sampling with them.
    """
    log_w = samples["proposal_log_w"].values
    cvs = {cv: samples["proposal_cv_values"].sel(cv=cv).values for cv in samples["cv"].values}
    in_state = [np.where(state.contains(cvs), log_w, -np.inf) for state in system.states]
    return dict(pareto_k=pareto_k(log_w), pareto_k_state=np.array([pareto_k(w) for w in in_state]),
                tail_n_distinct=float(np.isfinite(log_w).sum()),
                tail_n_distinct_state=np.array([float(np.isfinite(w).sum()) for w in in_state]),
                tail_of="proposals'")


def bin_effective_samples(index: np.ndarray, log_w: np.ndarray, groups: np.ndarray, n_bins: int) -> np.ndarray:
    """Kish effective samples per bin, with copies of a sample (same group) merged into one."""
    merged, first = estimators.merge_copies(log_w, groups)
    return estimators.binned_effective_samples(index[first], merged, n_bins)


def surface_divergences(observables: xr.Dataset, system, surface: np.ndarray, settings: AnalysisSettings):
    """(KL, JS) of a surface's histogram against MBAR's at ``settings.divergence_samples`` samples."""
    first, second = system.cvs[:2]
    area = np.outer(np.diff(edges_from(observables, first)), np.diff(edges_from(observables, second)))
    reference = np.nan_to_num(np.exp(-observables[surface_name(system)].values) * area, nan=0.0)
    probability = np.nan_to_num(np.exp(-surface) * area, nan=0.0)
    return estimators.resampled_divergences(reference, probability, settings.divergence_samples,
                                            settings.divergence_repeats, settings.seed)


def divergence_long_name(kind: str, system, settings: AnalysisSettings) -> str:
    first, second = system.cvs[:2]
    what = "KL(MBAR || estimate)" if kind == "KL" else "Jensen-Shannon divergence from MBAR"
    return (f"{what} of the ({first}, {second}) histogram in nats, at {settings.divergence_samples} samples drawn "
            f"by weight (mean of {settings.divergence_repeats}; a perfect sampler scores the mbar row's value)")
