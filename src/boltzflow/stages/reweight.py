"""Importance reweighting: estimates from any model's weighted samples, with bootstrap standard errors."""

from __future__ import annotations

import numpy as np
import xarray as xr

from boltzflow import estimators
from boltzflow.estimator_table import BY_NAME
from boltzflow.settings import AnalysisSettings
from boltzflow.stages.datasets import edges_from, grid_coords, surface_name, variable


def reweight_stage(system, samples: xr.Dataset, observables: xr.Dataset, estimator: str,
                   settings: AnalysisSettings, log=print) -> xr.Dataset:
    """Importance-reweighted estimates from the samples of ``estimator`` (a name in the estimator table),
    plus the unweighted model as ``{estimator}_raw`` where the table asks for that companion.

    ΔF, profiles and ln Z carry bootstrap standard errors over ``settings.bootstrap`` resamples. ESS/N is
    reported raw and with the top ``settings.trim_fraction`` of log-weights clipped (``ess_fraction_trimmed``);
    the KL and JS divergences compare the 2D histogram over the first two CVs with MBAR's.
    """
    spec = BY_NAME[estimator]
    trim_fraction = settings.trim_fraction
    positions = samples["positions"].values
    cvs = system.cv_values(positions)
    log_w = samples["log_w"].values
    n = len(log_w)
    n_dropped = int(samples.attrs["n_nonfinite"])
    if n_dropped:
        log(f"dropped {n_dropped} of {n} samples with non-finite energy or density (zero weight)")
    edges = {cv: edges_from(observables, cv) for cv in system.cvs}

    def statistics(lw):
        parts = [estimators.state_delta_f(lw, cvs, system.states), [estimators.log_partition_function(lw)]]
        parts += [estimators.weighted_profile(cvs[cv], lw, edges[cv]) for cv in system.cvs]
        return np.concatenate(parts)

    # The raw model is every sample with equal weight, whatever its energy.
    raw = np.zeros(n)
    weightings = [log_w, raw] if spec.raw_companion else [log_w]
    names = [estimator, f"{estimator}_raw"][:len(weightings)]
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
    dataset = xr.Dataset(coords={**grid_coords(system, edges), "estimator": names})
    dataset["delta_f"] = variable(("estimator", "state"), values[:, :n_states], "kT",
                              "state free energy relative to the first state")
    dataset["delta_f_err"] = variable(("estimator", "state"), errors[:, :n_states], "kT",
                                  "bootstrap standard error of delta_f")
    dataset["ess_fraction"] = variable("estimator", ess, "1", "Kish effective sample size / N (raw weights)")
    dataset["ess_fraction_trimmed"] = variable("estimator", ess_trimmed, "1",
                                           f"Kish ESS / N with the top {trim_fraction:g} of log-weights clipped")
    dataset["log_z"] = variable("estimator", log_z, "1", system.log_z_long_name)
    dataset["log_z_err"] = variable("estimator", log_z_err, "1", "bootstrap standard error of log_z")
    dataset["n_samples"] = variable("estimator", [n] * len(names), "1", "number of model samples")
    dataset["acceptance_rate"] = variable("estimator", acceptance, "1", "Metropolis-Hastings acceptance rate (SMC moves, MCMC)")
    start = n_states + 1
    for cv in system.cvs:
        stop = start + len(edges[cv]) - 1
        dataset[f"F_{cv}"] = variable(("estimator", cv), values[:, start:stop], "kT", f"free-energy profile along {cv}")
        dataset[f"dF_{cv}"] = variable(("estimator", cv), errors[:, start:stop], "kT", f"bootstrap standard error of F_{cv}")
        start = stop
    first, second = system.cvs[:2]
    surfaces = [estimators.weighted_surface(cvs[first], cvs[second], lw, edges[first], edges[second])
                for lw in weightings]
    dataset[surface_name(system)] = variable(("estimator", first, second), surfaces, "kT",
                                         f"free-energy surface -ln p({first}, {second})")
    area = np.outer(np.diff(edges[first]), np.diff(edges[second]))
    reference = np.exp(-observables[surface_name(system)].values) * area
    divergences = [estimators.histogram_divergences(reference, np.exp(-surface) * area) for surface in surfaces]
    dataset["kl_divergence"] = variable("estimator", [d[0] for d in divergences], "1",
                                    f"KL(MBAR || estimate) of the ({first}, {second}) histogram, nats")
    dataset["js_divergence"] = variable("estimator", [d[1] for d in divergences], "1",
                                    f"Jensen-Shannon divergence from MBAR of the ({first}, {second}) histogram, nats")
    dataset.attrs["n_nonfinite"] = n_dropped
    return dataset
