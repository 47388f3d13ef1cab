"""The reliability verdict of an estimate: can its ΔF and standard error be trusted?

A weighted estimate can be wrong with a small error bar: when the importance weights have a heavy tail
(a handful of samples carry the answer), when a state holds only a few (distinct) samples, or when the
model's log-density is biased (the ODE integrator of a score model). Each check below states its threshold
(``settings.AnalysisSettings``); an estimate that fails any of them is marked unreliable, with the reasons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from boltzflow.settings import AnalysisSettings


def pareto_k(log_w: np.ndarray) -> float:
    """Pareto-smoothed importance sampling's k̂ (Vehtari et al. 2024) of the finite log-weights.

    k̂ estimates the shape of the generalized Pareto tail of the weights: above 0.7 the variance of the
    importance-sampling estimate is (practically) infinite and a finite ESS or bootstrap error cannot be
    trusted. From arviz-stats (the maintained implementation); NaN when fewer than 10 weights are finite
    (too few to fit a tail) and -inf when every finite weight is equal (no tail at all).
    """
    from arviz_stats.base import array_stats

    log_w = np.asarray(log_w, dtype=float)
    finite = log_w[np.isfinite(log_w)]
    if len(finite) < 10:
        return np.nan
    if np.ptp(finite) == 0:
        return -np.inf
    # arviz-stats' psislw takes log-likelihood values as in PSIS-LOO, whose weights are their negatives.
    return float(array_stats.psislw(-(finite - finite.max()))[1])


@dataclass(frozen=True)
class Diagnostics:
    """What the verdict is based on, for one estimator over the states (arrays over states).

    ``pareto_k``: PSIS k̂ of all weights (NaN: not a weighted estimator); ``pareto_k_state``: k̂ of the
    weights inside each state; ``ess``: Kish effective samples of all weights (NaN: not applicable);
    ``n_eff_state``: effective samples in each state (Kish, capped by the number of distinct samples);
    ``integrator_error``: estimated bias of ΔF from the model's log-density (kT; 0 for exact densities);
    ``biased``: a reason why the estimate is biased by construction (an unweighted model), or "".
    """

    delta_f: np.ndarray
    delta_f_err: np.ndarray
    pareto_k: float
    pareto_k_state: np.ndarray
    ess: float
    n_eff_state: np.ndarray
    integrator_error: np.ndarray
    biased: str = ""


def verdict(diagnostics: Diagnostics, state_names: list[str], settings: AnalysisSettings
            ) -> tuple[np.ndarray, list[str]]:
    """(reliable per state, reason per state: "" when reliable, else every failed check joined by "; ").

    The first state is the reference of every ΔF, so its checks (samples, tail) apply to every state.
    """
    d = diagnostics
    n_states = len(state_names)
    common = []
    if d.biased:
        common.append(d.biased)
    if np.isfinite(d.pareto_k) and d.pareto_k > settings.max_pareto_k:
        common.append(f"PSIS k̂ {d.pareto_k:.2f} > {settings.max_pareto_k:g}")
    if np.isfinite(d.ess) and d.ess < settings.min_ess:
        common.append(f"ESS {d.ess:.1f} < {settings.min_ess:g}")

    def state_checks(s: int) -> list[str]:
        name = state_names[s]
        if d.n_eff_state[s] <= 0:
            return [f"no weighted sample in {name}"]
        found = []
        if d.n_eff_state[s] < settings.min_state_ess:
            found.append(f"{d.n_eff_state[s]:.1f} effective samples in {name} < {settings.min_state_ess:g}")
        if np.isfinite(d.pareto_k_state[s]) and d.pareto_k_state[s] > settings.max_pareto_k:
            found.append(f"PSIS k̂ {d.pareto_k_state[s]:.2f} in {name} > {settings.max_pareto_k:g}")
        return found

    reference = state_checks(0)
    reliable = np.zeros(n_states, dtype=bool)
    reasons = []
    for s in range(n_states):
        found = list(common) + reference + (state_checks(s) if s else [])
        if not found and s:
            if not (np.isfinite(d.delta_f[s]) and np.isfinite(d.delta_f_err[s])):
                found.append("ΔF or its error is not finite")
            elif abs(d.integrator_error[s]) > settings.max_integrator_error_fraction * d.delta_f_err[s]:
                # A bias above this fraction of σ moves the 2σ interval off the truth noticeably.
                found.append(f"integrator bias {d.integrator_error[s]:.3f} kT > "
                             f"{settings.max_integrator_error_fraction:g} σ ({d.delta_f_err[s]:.3f} kT)")
        reliable[s] = not found
        reasons.append("; ".join(found))
    return reliable, reasons
