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

#: Fewer finite weights than this leave too short a tail to fit (arviz-stats needs 5 tail draws, n / 5).
MIN_PARETO_SAMPLES = 25


def pareto_k(log_w: np.ndarray) -> float:
    """Pareto-smoothed importance sampling's k̂ (Vehtari et al. 2024) of the finite log-weights.

    k̂ estimates the shape of the generalized Pareto tail of the weights: above 0.7 the variance of the
    importance-sampling estimate is (practically) infinite and a finite ESS or bootstrap error cannot be
    trusted. From arviz-stats (the maintained implementation); NaN with fewer than ``MIN_PARETO_SAMPLES``
    finite weights or a tail the fit cannot take (tied values), -inf when every finite weight is equal.
    Merge copies of one sample first (``estimators.merge_copies``): tied copies are not a tail.
    """
    from arviz_stats.base import array_stats

    log_w = np.asarray(log_w, dtype=float)
    finite = log_w[np.isfinite(log_w)]
    if len(finite) < MIN_PARETO_SAMPLES:
        return np.nan
    if np.ptp(finite) == 0:
        return -np.inf
    try:
        # arviz-stats' psislw takes log-likelihood values as in PSIS-LOO, whose weights are their negatives.
        return float(array_stats.psislw(-(finite - finite.max()))[1])
    except ValueError:  # e.g. "All tail values are the same"
        return np.nan


def pareto_k_threshold(n_samples: float, ceiling: float) -> float:
    """The k̂ above which an estimate from ``n_samples`` is unreliable: min(1 − 1/log10 S, ceiling).

    Vehtari et al. (2024, PSIS, section 3.2.4): with few samples even a k̂ below 0.7 leaves the error
    estimate unreliable (0.41 at S = 50, 0.5 at 100; 0.7 from S = 2,154 on).
    """
    if not n_samples > 10:
        return -np.inf
    return min(1.0 - 1.0 / np.log10(n_samples), ceiling)


def weight_checks(k_hat: float, ess: float, n_samples: float, settings: AnalysisSettings) -> list[str]:
    """The checks on one whole set of importance weights, as reasons (empty: passed): PSIS k̂ above the
    threshold for ``n_samples`` draws (:func:`pareto_k_threshold`), or a Kish ESS below ``settings.min_ess``.
    NaN k̂ or ESS (not a weighted estimate) passes."""
    found = []
    threshold = pareto_k_threshold(n_samples, settings.max_pareto_k)
    if np.isfinite(k_hat) and k_hat > threshold:
        found.append(f"PSIS k̂ {k_hat:.2f} > {threshold:.2f}")
    if np.isfinite(ess) and ess < settings.min_ess:
        found.append(f"ESS {ess:.1f} < {settings.min_ess:g}")
    return found


@dataclass(frozen=True)
class Diagnostics:
    """What the verdict is based on, for one estimator over the states (arrays over states).

    ``pareto_k``: PSIS k̂ of all weights (NaN: not a weighted estimator); ``pareto_k_state``: k̂ of the
    weights inside each state; ``ess``: Kish effective samples of all weights (NaN: not applicable);
    ``n_eff_state``: effective samples in each state (Kish, copies of a sample merged);
    ``n_distinct``, ``n_distinct_state``: distinct samples with weight, in all and in each state (the S of
    the k̂ threshold); ``integrator_error`` ± ``integrator_error_err``: estimated bias of ΔF from the model's
    log-density (kT), ``integrator_measured``: whether the model has one (score models; flows are exact);
    ``biased``: a reason why the estimate is biased by construction (an unweighted model), or "".
    ``tail_of``: whose weights ``pareto_k`` and ``pareto_k_state`` describe when not the estimate's own (an
    independence MH sampler: its proposals', whose tail decides whether its chains mix), with
    ``tail_n_distinct`` and ``tail_n_distinct_state`` the draws they were taken over (the S of the threshold).
    """

    delta_f: np.ndarray
    delta_f_err: np.ndarray
    pareto_k: float
    pareto_k_state: np.ndarray
    ess: float
    n_eff_state: np.ndarray
    integrator_error: np.ndarray
    n_distinct: float = np.inf
    n_distinct_state: np.ndarray | None = None
    integrator_error_err: np.ndarray | None = None
    integrator_measured: bool = False
    biased: str = ""
    tail_of: str = ""
    tail_n_distinct: float | None = None
    tail_n_distinct_state: np.ndarray | None = None


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
    n_distinct_state = d.n_distinct_state if d.n_distinct_state is not None else np.full(n_states, np.inf)
    tail_n_distinct = d.tail_n_distinct if d.tail_n_distinct is not None else d.n_distinct
    tail_n_distinct_state = d.tail_n_distinct_state if d.tail_n_distinct_state is not None else n_distinct_state
    tail_of = f"{d.tail_of} " if d.tail_of else ""
    integrator_error_err = d.integrator_error_err if d.integrator_error_err is not None else np.zeros(n_states)
    common += [tail_of + reason for reason in weight_checks(d.pareto_k, np.nan, tail_n_distinct, settings)]
    common += weight_checks(np.nan, d.ess, d.n_distinct, settings)

    def state_checks(s: int) -> list[str]:
        name = state_names[s]
        if d.n_eff_state[s] <= 0:
            return [f"no weighted sample in {name}"]
        found = []
        if d.n_eff_state[s] < settings.min_state_ess:
            found.append(f"{d.n_eff_state[s]:.1f} effective samples in {name} < {settings.min_state_ess:g}")
        limit = pareto_k_threshold(tail_n_distinct_state[s], settings.max_pareto_k)
        if np.isfinite(d.pareto_k_state[s]) and d.pareto_k_state[s] > limit:
            found.append(f"{tail_of}PSIS k̂ {d.pareto_k_state[s]:.2f} in {name} > {limit:.2f}")
        return found

    reference = state_checks(0)
    reliable = np.zeros(n_states, dtype=bool)
    reasons = []
    for s in range(n_states):
        found = list(common) + reference + (state_checks(s) if s else [])
        if not found and s:
            if not (np.isfinite(d.delta_f[s]) and np.isfinite(d.delta_f_err[s])):
                found.append("ΔF or its error is not finite")
            elif d.integrator_measured and not np.isfinite(d.integrator_error[s]):
                found.append(f"integrator error not measured for {state_names[s]}")
            elif d.integrator_measured:
                # The bias bound |e| + 2 err (the check's own noise) against a fraction of σ: a larger bias
                # moves the 2σ interval off the truth noticeably.
                bound = abs(d.integrator_error[s]) + 2 * np.nan_to_num(integrator_error_err[s])
                if bound > settings.max_integrator_error_fraction * d.delta_f_err[s]:
                    found.append(f"integrator bias up to {bound:.3f} kT > "
                                 f"{settings.max_integrator_error_fraction:g} σ ({d.delta_f_err[s]:.3f} kT)")
        reliable[s] = not found
        reasons.append("; ".join(found))
    return reliable, reasons
