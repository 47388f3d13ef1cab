"""The summary: the MBAR reference and every model estimator side by side, with CPU costs."""

from __future__ import annotations

import numpy as np
import xarray as xr

from boltzflow.stages.datasets import surface_name, variable


def benchmark_cpu_seconds(paths) -> float:
    """Sum of CPU seconds over Snakemake benchmark files (falls back to wall seconds if CPU is missing)."""
    import pandas as pd

    total = 0.0
    for path in paths:
        row = pd.read_csv(path, sep="\t").iloc[-1]
        cpu = float(row.get("cpu_time", np.nan))
        total += cpu if np.isfinite(cpu) and cpu > 0 else float(row["s"])
    return total


SUMMARY_VARIABLES = ["delta_f", "delta_f_err", "ess_fraction", "ess_fraction_trimmed", "log_z", "log_z_err",
                     "kl_divergence", "js_divergence", "n_samples", "acceptance_rate", "cpu_seconds"]


def summary_stage(system, observables: xr.Dataset, estimates: list[xr.Dataset], cpu_seconds: dict[str, float]):
    """Combine the MBAR reference and every model estimator → (summary, profiles, surface)."""
    reference = observables.expand_dims(estimator=["mbar"])
    nan = [np.nan]
    rows = [reference.assign(
        ess_fraction=variable("estimator", nan, "1", "Kish effective sample size / N (raw weights)"),
        ess_fraction_trimmed=variable("estimator", nan, "1", "Kish ESS / N with the top log-weights clipped"),
        log_z=variable("estimator", nan, "1", system.log_z_long_name),
        log_z_err=variable("estimator", nan, "1", "standard error of log_z"),
        kl_divergence=variable("estimator", [0.0], "1", "KL(MBAR || estimate) of the 2D CV histogram, nats"),
        js_divergence=variable("estimator", [0.0], "1", "Jensen-Shannon divergence from MBAR, nats"),
        n_samples=variable("estimator", [observables.attrs["n_samples"]], "1", "number of samples used"),
        acceptance_rate=variable("estimator", nan, "1", "Metropolis-Hastings acceptance rate (SMC moves, MCMC)"),
    )]
    rows += estimates
    combined = xr.concat(rows, dim="estimator", data_vars="all", coords="minimal", compat="override",
                         combine_attrs="override")
    combined.attrs = {}  # the inputs' global attributes describe them, not the summary
    names = [str(e) for e in combined["estimator"].values]
    combined["cpu_seconds"] = variable("estimator", [cpu_seconds.get(e, np.nan) for e in names], "s",
                                   "CPU seconds of the rules that produced the estimate (benchmark files)")
    summary = combined[SUMMARY_VARIABLES].drop_vars(
        [c for c in combined.coords if c not in ("estimator", "state")], errors="ignore")
    summary["delta_f"].attrs["long_name"] = (
        f"state free energy relative to {system.states[0].name} at {system.target_temperature_k:g} K")
    profile_vars = [f"{prefix}_{cv}" for cv in system.cvs for prefix in ("F", "dF")]
    keep = {"estimator", *system.cvs, *(f"{cv}_edges" for cv in system.cvs)}
    profiles = combined[profile_vars].drop_vars([c for c in combined.coords if c not in keep], errors="ignore")
    keep_surface = {"estimator", *system.cvs[:2], *(f"{cv}_edges" for cv in system.cvs[:2])}
    surface = combined[[surface_name(system)]].drop_vars(
        [c for c in combined.coords if c not in keep_surface], errors="ignore")
    return summary, profiles, surface


def summary_table(summary: xr.Dataset):
    """The summary as a long table: one row per (estimator, state)."""
    table = summary.to_dataframe().reset_index()
    return table[["estimator", "state", *SUMMARY_VARIABLES]]
