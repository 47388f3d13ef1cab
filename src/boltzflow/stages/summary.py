"""The summary: the references (MBAR; quadrature for 2D systems) and every model estimator side by side, with
their reliability verdicts, their deviation from the reference in units of the combined error, and CPU costs."""

from __future__ import annotations

import numpy as np
import xarray as xr

from boltzflow.reliability import Diagnostics, verdict
from boltzflow.settings import AnalysisSettings
from boltzflow.stages.datasets import surface_effective_name, surface_name, variable
from boltzflow.stages.reweight import divergence_long_name

#: The columns of summary.csv, in order (README, "How to read the summary").
SUMMARY_VARIABLES = ["reliable", "delta_f", "delta_f_err", "reference_delta_f", "reference_delta_f_err", "z_score",
                     "unreliable_reason", "ess_fraction", "ess_fraction_trimmed", "pareto_k", "pareto_k_state",
                     "n_eff_state", "n_distinct_state", "integrator_error", "log_z", "log_z_err",
                     "kl_divergence", "js_divergence", "n_samples", "n_dropped", "acceptance_rate", "cpu_seconds"]


def _reference_row(observables: xr.Dataset, system, settings: AnalysisSettings) -> xr.Dataset:
    """MBAR as a row of the summary: reliable where its ΔF and error are finite and the state holds
    ``min_state_ess`` effective (decorrelated) samples."""
    from boltzflow.stages.reweight import surface_divergences

    n_states = len(system.states)
    nan, nan_states = [np.nan], [np.full(n_states, np.nan)]
    delta_f, error = observables["delta_f"].values, observables["delta_f_err"].values
    n_eff = observables["n_eff_state"].values
    # The same verdict as the models', with only the checks that apply to MBAR: samples per state and
    # finite values (no weight tail, no integrator).
    reliable, reasons = verdict(Diagnostics(delta_f=delta_f, delta_f_err=error, pareto_k=np.nan,
                                            pareto_k_state=np.full(n_states, np.nan), ess=np.nan, n_eff_state=n_eff,
                                            integrator_error=np.zeros(n_states)),
                                [state.name for state in system.states], settings)
    kl, js = surface_divergences(observables, system, observables[surface_name(system)].values, settings)
    row = observables.expand_dims(estimator=["mbar"])
    return row.assign(
        ess_fraction=variable("estimator", nan, "1", "Kish effective sample size / N (raw weights)"),
        ess_fraction_trimmed=variable("estimator", nan, "1", "Kish ESS / N with the top log-weights clipped"),
        log_z=variable("estimator", nan, "1", system.log_z_long_name),
        log_z_err=variable("estimator", nan, "1", "standard error of log_z"),
        kl_divergence=variable("estimator", [kl], "1", divergence_long_name("KL", system, settings)),
        js_divergence=variable("estimator", [js], "1", divergence_long_name("JS", system, settings)),
        n_samples=variable("estimator", [observables.attrs["n_samples"]], "1", "number of samples used"),
        n_dropped=variable("estimator", [0], "1", "samples with zero weight"),
        acceptance_rate=variable("estimator", nan, "1", "Metropolis-Hastings acceptance rate (SMC moves, MCMC)"),
        pareto_k=variable("estimator", nan, "1", "PSIS k-hat of all log-weights"),
        pareto_k_state=variable(("estimator", "state"), nan_states, "1", "PSIS k-hat of the log-weights inside the state"),
        n_eff_state=variable(("estimator", "state"), [n_eff], "1", "effective samples in the state"),
        n_distinct_state=variable(("estimator", "state"), nan_states, "1", "distinct samples in the state"),
        integrator_error=variable(("estimator", "state"), [np.zeros(n_states)], "kT", "bias of delta_f from an ODE integrator"),
        reliable=variable(("estimator", "state"), [reliable], "1", "1 if reliable"),
        unreliable_reason=variable(("estimator", "state"), np.array([reasons], dtype=object), "", "failed checks"),
    )


def _complete(row: xr.Dataset, template: xr.Dataset) -> xr.Dataset:
    """Add the variables of ``template`` that ``row`` lacks, filled with NaN (per-estimator model data)."""
    missing = {}
    for name, var in template.data_vars.items():
        if name in row or "estimator" not in var.dims:
            continue
        shape = [row.sizes.get(d, template.sizes[d]) for d in var.dims]
        fill = np.full(shape, "" if var.dtype == object else np.nan, dtype=object if var.dtype == object else float)
        if name == "reliable":
            fill = np.ones(shape, dtype=np.int8)
        missing[name] = (var.dims, fill, var.attrs)
    return row.assign(missing)


def summary_stage(system, observables: xr.Dataset, estimates: list[xr.Dataset], cpu_seconds: dict[str, float],
                  settings: AnalysisSettings):
    """Combine the references and every model estimator → (summary, profiles, surface).

    ``estimates`` are the reweighting outputs and, for 2D systems, the quadrature's. The comparison
    reference of each row (``reference_delta_f`` ± ``reference_delta_f_err``, and ``z_score``) is the
    quadrature where there is one (the exact answer), else MBAR.
    """
    rows = [_reference_row(observables, system, settings)]
    template = next((e for e in estimates if "reliable" in e and "estimator" in e["reliable"].dims), rows[0])
    rows += [_complete(e, template) for e in estimates]
    combined = xr.concat(rows, dim="estimator", data_vars="all", coords="minimal", compat="override",
                         combine_attrs="override", join="override")
    combined.attrs = {}  # the inputs' global attributes describe them, not the summary
    names = [str(e) for e in combined["estimator"].values]
    combined["cpu_seconds"] = variable("estimator", [cpu_seconds.get(e, np.nan) for e in names], "s",
                                   "CPU seconds of the rules that produced the estimate (benchmark files)")
    reference = "quadrature" if "quadrature" in names else "mbar"
    ref = combined.sel(estimator=reference)
    combined["reference_delta_f"] = variable(("estimator", "state"), np.broadcast_to(
        ref["delta_f"].values, combined["delta_f"].shape), "kT", f"delta_f of the reference ({reference})")
    combined["reference_delta_f_err"] = variable(("estimator", "state"), np.broadcast_to(
        ref["delta_f_err"].values, combined["delta_f"].shape), "kT", f"standard error of the reference ({reference})")
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (combined["delta_f"].values - combined["reference_delta_f"].values) / np.hypot(
            combined["delta_f_err"].values, combined["reference_delta_f_err"].values)
    combined["z_score"] = variable(("estimator", "state"), z, "1",
                                   f"(delta_f - reference) / combined standard error, reference {reference}")
    combined["reliable"] = combined["reliable"].astype(np.int8)
    summary = combined[SUMMARY_VARIABLES].drop_vars(
        [c for c in combined.coords if c not in ("estimator", "state")], errors="ignore")
    summary["delta_f"].attrs["long_name"] = (
        f"state free energy relative to {system.states[0].name} at {system.target_temperature_k:g} K")
    summary.attrs["reference"] = reference
    profile_vars = [f"{prefix}_{cv}" for cv in system.cvs for prefix in ("F", "dF", "n_eff")]
    keep = {"estimator", *system.cvs, *(f"{cv}_edges" for cv in system.cvs)}
    profiles = combined[profile_vars].drop_vars([c for c in combined.coords if c not in keep], errors="ignore")
    keep_surface = {"estimator", *system.cvs[:2], *(f"{cv}_edges" for cv in system.cvs[:2])}
    surface = combined[[surface_name(system), surface_effective_name(system)]].drop_vars(
        [c for c in combined.coords if c not in keep_surface], errors="ignore")
    # Bin edges have their own dimension, so selecting variables drops them: carry them explicitly.
    profiles = profiles.assign_coords({f"{cv}_edges": combined[f"{cv}_edges"] for cv in system.cvs})
    surface = surface.assign_coords({f"{cv}_edges": combined[f"{cv}_edges"] for cv in system.cvs[:2]})
    return summary, profiles, surface


def summary_table(summary: xr.Dataset):
    """The summary as a long table: one row per (estimator, state), reliability first."""
    table = summary.to_dataframe().reset_index()
    table["reliable"] = table["reliable"].astype(bool)
    return table[["estimator", "state", *SUMMARY_VARIABLES]]


def unreliable_lines(summary: xr.Dataset) -> list[str]:
    """One line per unreliable (estimator, state), for the log."""
    lines = []
    for estimator in summary["estimator"].values:
        for state in summary["state"].values:
            row = summary.sel(estimator=estimator, state=state)
            if not bool(row["reliable"]):
                lines.append(f"UNRELIABLE {estimator} {state}: {row['unreliable_reason'].item()}")
    return lines



