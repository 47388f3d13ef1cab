"""Ladder stage: the reduced free energies f(T) that a temperature-conditioned model's samples at every ladder
temperature give (``stages.flow.sample_ladder_stage``), the model's counterpart of ``analysis/mbar.nc``.

At temperature T_k the model draws x ~ q(x | T_k) and weighs it by w = exp(-u_k(x)) / q(x | T_k), with
u_k = E / k_B T_k = u_target T_target / T_k (the potential does not depend on temperature). Then
Z_k = E_q[w] (ln Z by ``estimators.log_partition_function``) and f(T_k) = -ln Z_k + ln Z_1, reduced at each
temperature like MBAR's f. Each temperature's draws are independent, so the error of f(T_k) is the root sum
of the bootstrap errors of ln Z_k and ln Z_1.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from boltzflow import estimators
from boltzflow.settings import AnalysisSettings
from boltzflow.stages.datasets import variable


def ladder_estimates(samples: xr.Dataset, settings: AnalysisSettings) -> xr.Dataset:
    """f(T) relative to the first temperature with bootstrap errors, ESS/N, PSIS k̂ and a reliability verdict
    per temperature, from :func:`sample_ladder_stage`'s samples."""
    from boltzflow.reliability import pareto_k, weight_checks  # arviz-stats: the analysis env's

    log_w = samples["log_w"].values
    n_temperatures, n = log_w.shape
    ln_z, ln_z_err, ess, k_hat, reliable, reasons = [], [], [], [], [], []
    for k in range(n_temperatures):
        result = estimators.bootstrap(estimators.log_partition_function, log_w[k], settings.bootstrap,
                                      settings.seed + k)
        ln_z.append(float(result.estimate))
        ln_z_err.append(float(result.standard_error))
        ess.append(estimators.ess_fraction(log_w[k]))
        k_hat.append(pareto_k(log_w[k]))
        found = [] if np.isfinite(ln_z[-1]) else ["no finite weight"]
        reasons.append(found + weight_checks(k_hat[-1], ess[-1] * n, n, settings))
    ln_z, ln_z_err = np.array(ln_z), np.array(ln_z_err)
    f = -(ln_z - ln_z[0])
    df = np.sqrt(ln_z_err ** 2 + ln_z_err[0] ** 2)
    df[0] = 0.0
    # f at every temperature is relative to the first: the first one's trouble is everyone's.
    target_reason = f"{samples.temperature.values[0]:g} K: " + "; ".join(reasons[0])
    for k in range(n_temperatures):
        found = reasons[k] + ([target_reason] if k and reasons[0] else [])
        reliable.append(not found)
        reasons[k] = "; ".join(found)
    return xr.Dataset(
        {"f": variable("temperature", f, "1", "reduced free energy -ln Z relative to the first temperature"),
         "df": variable("temperature", df, "1", "bootstrap standard error of f"),
         "ess_fraction": variable("temperature", ess, "1", "Kish ESS / N of the weights at that temperature"),
         "pareto_k": variable("temperature", k_hat, "1", "PSIS k̂ of the weights at that temperature"),
         "reliable": variable("temperature", np.array(reliable), "1",
                              "f and its error can be trusted (k̂, ESS; the first temperature's checks apply to all)"),
         "reason": variable("temperature", np.array(reasons, dtype=object), "1", "why not reliable (empty: reliable)")},
        coords={"temperature": samples["temperature"]},
    )
