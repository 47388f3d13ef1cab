"""Free-energy estimators: MBAR over the MD temperature ladder, and importance reweighting of model samples.

Conventions (as pymbar 4): ``u_kn[k, n]`` is the reduced potential E(x_n) / kT_k of sample n at temperature
k; reduced free energies f = -ln Z are dimensionless. State free energies ΔF_s = -ln(P_s / P_ref) are in kT
at the target temperature, relative to the first (reference) state. Free-energy profiles are
F(bin) = -ln(p(bin) / width(bin)), i.e. minus the log of a normalized probability density, so profiles of
different estimators are comparable without any shift.

Importance weights of model samples are log w = -u(x) - log q(x). Samples whose energy or model density is
not finite get weight zero (log w = -inf): they are counted, never propagated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from boltzflow.cvs import State

# Reduced potential used for "outside this state" in MBAR's perturbed free energies: large enough that
# exp(-u) underflows to exactly 0, finite so that pymbar's uncertainty algebra stays free of inf - inf.
_OUTSIDE = 1e6


# ---------------------------------------------------------------- MBAR reference


def build_mbar(u_kn: np.ndarray, n_k: np.ndarray):
    """Solve MBAR; returns the pymbar.MBAR object."""
    from pymbar import MBAR

    return MBAR(u_kn, n_k, solver_protocol="robust")


def mbar_ladder_free_energies(mbar) -> tuple[np.ndarray, np.ndarray]:
    """Reduced free energies f_k - f_0 of each temperature and their standard errors."""
    result = mbar.compute_free_energy_differences()
    return result["Delta_f"][0], result["dDelta_f"][0]


def _restrict(u_target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, u_target, u_target + _OUTSIDE)


def _perturbed_free_energies(mbar, u_reference, u_target, masks: list[np.ndarray]):
    """-ln(Z_region / Z_reference) at the target for each region, with MBAR's standard errors.

    Covariances between the reference and each region are included (pymbar's perturbed free
    energies). A region that no sample visits gets +inf and an error of NaN.
    """
    visited = np.array([mask.any() for mask in masks])
    rows = [u_reference] + [_restrict(u_target, mask) for mask, seen in zip(masks, visited) if seen]
    result = mbar.compute_perturbed_free_energies(np.vstack(rows))
    free = np.full(len(masks), np.inf)
    error = np.full(len(masks), np.nan)
    free[visited] = result["Delta_f"][0, 1:]
    error[visited] = result["dDelta_f"][0, 1:]
    return free, error


def mbar_state_delta_f(mbar, u_target, cvs: dict[str, np.ndarray], states: tuple[State, ...]):
    """ΔF of each state relative to the first, in kT, with MBAR's standard errors."""
    masks = [state.contains(cvs) for state in states]
    if not masks[0].any():
        return np.full(len(states), np.nan), np.full(len(states), np.nan)
    return _perturbed_free_energies(mbar, _restrict(u_target, masks[0]), u_target, masks)


def mbar_profile(mbar, u_target, values: np.ndarray, edges: np.ndarray):
    """Free-energy profile F(bin) = -ln(p / width) in kT along one CV, with standard errors."""
    index = np.digitize(values, edges) - 1
    masks = [index == b for b in range(len(edges) - 1)]
    free, error = _perturbed_free_energies(mbar, u_target, u_target, masks)
    profile = free + np.log(np.diff(edges))
    profile[~np.isfinite(profile)] = np.nan
    return profile, error


# ---------------------------------------------------------------- importance reweighting


def log_weights(reduced_energy: np.ndarray, log_q: np.ndarray) -> tuple[np.ndarray, int]:
    """log w = -u - log q, with -inf for non-finite samples; returns (log_w, number of such samples)."""
    log_w = -np.asarray(reduced_energy, dtype=float) - np.asarray(log_q, dtype=float)
    bad = ~np.isfinite(log_w)
    log_w[bad] = -np.inf
    return log_w, int(bad.sum())


def draw_by_weight(log_w: np.ndarray, n_draws: int, seed: int) -> np.ndarray:
    """Indices of ``n_draws`` samples drawn with replacement, each with probability w / Σw (w = exp(log_w)).

    The draws are an (equally weighted) sample of the distribution the weights reweight to: what
    ``state_delta_f`` and the profiles estimate, as a set of frames. Samples with a non-finite log-weight
    (weight zero, as in ``log_weights``) are never drawn; with no finite weight at all there is nothing to
    draw from, and the result is empty.
    """
    log_w = np.asarray(log_w, dtype=float)
    finite = np.isfinite(log_w)
    if not finite.any():
        return np.zeros(0, dtype=np.int64)
    weights = np.where(finite, np.exp(log_w - log_w[finite].max(), where=finite, out=np.zeros_like(log_w)), 0.0)
    return np.random.default_rng(seed).choice(len(log_w), size=int(n_draws), p=weights / weights.sum())


def ess_fraction(log_w: np.ndarray) -> float:
    """Kish effective sample size over the number of samples: (Σw)² / (N Σw²), in [0, 1].

    ``log_w`` is one-dimensional. Samples with a non-finite log-weight have weight zero (as in
    ``log_weights``) but count in N; with no finite weight at all the ESS is 0.
    """
    log_w = np.asarray(log_w, dtype=float)
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    if not np.isfinite(log_w).any():
        return 0.0
    return float(np.exp(2 * logsumexp(log_w) - logsumexp(2 * log_w)) / log_w.shape[-1])


def trimmed_log_weights(log_w: np.ndarray, fraction: float) -> np.ndarray:
    """Log-weights with the largest ``fraction`` of the finite ones clipped to the value below them.

    The trimmed ESS says how much of a low raw ESS comes from a handful of extreme weights; estimates
    from trimmed weights are biased, so boltzflow reports only the trimmed ESS, never trimmed ΔF.
    """
    log_w = np.asarray(log_w, dtype=float)
    finite = log_w[np.isfinite(log_w)]
    n_trim = int(np.floor(fraction * len(finite)))
    if n_trim == 0:
        return log_w.copy()
    threshold = np.sort(finite)[-n_trim - 1]
    return np.minimum(log_w, threshold)


def histogram_divergences(reference: np.ndarray, model: np.ndarray, floor: float = 1e-12) -> tuple[float, float]:
    """(KL(reference || model), Jensen-Shannon divergence) in nats between two histograms.

    Both are normalized over bins first (NaN bins count as empty). Model bins with no mass get ``floor``
    in the KL, so that a model missing a region the reference visits costs a large but finite penalty;
    the JS divergence needs no floor and lies in [0, ln 2].
    """
    p = np.nan_to_num(np.asarray(reference, dtype=float), nan=0.0).ravel()
    q = np.nan_to_num(np.asarray(model, dtype=float), nan=0.0).ravel()
    if p.sum() <= 0 or q.sum() <= 0:
        return np.nan, np.nan
    p, q = p / p.sum(), q / q.sum()
    seen = p > 0
    kl = float(np.sum(p[seen] * np.log(p[seen] / np.maximum(q[seen], floor))))
    m = 0.5 * (p + q)

    def _kl_to_m(a):
        mask = a > 0
        return np.sum(a[mask] * np.log(a[mask] / m[mask]))

    return kl, float(0.5 * _kl_to_m(p) + 0.5 * _kl_to_m(q))


def log_partition_function(log_w: np.ndarray) -> float:
    """ln Z = ln mean(w) for log w = -u - log q: Z = ∫ exp(-u) dx in the units of x (nm² for toys)."""
    return float(logsumexp(log_w) - np.log(len(log_w)))


def state_delta_f(log_w: np.ndarray, cvs: dict[str, np.ndarray], states: tuple[State, ...]):
    """ΔF_s = -ln(P_s / P_ref) from weighted samples, in kT; +inf for a state with no weight.

    All NaN when the reference state has no weight: no difference to it can be estimated.
    """
    log_p = np.array([logsumexp(np.where(state.contains(cvs), log_w, -np.inf)) for state in states])
    if not np.isfinite(log_p[0]):
        return np.full(len(states), np.nan)
    with np.errstate(invalid="ignore"):
        return log_p[0] - log_p


def probability_in_no_state(log_w: np.ndarray, cvs: dict[str, np.ndarray], states: tuple[State, ...]) -> float:
    """The normalized weight of the samples that lie in none of the states (0 with no finite weight)."""
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    if not np.isfinite(log_w).any():
        return 0.0
    in_a_state = np.any([state.contains(cvs) for state in states], axis=0)
    with np.errstate(divide="ignore"):  # every sample in a state: ln 0
        return float(np.exp(logsumexp(np.where(in_a_state, -np.inf, log_w)) - logsumexp(log_w)))


def weighted_profile(values: np.ndarray, log_w: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """F(bin) = -ln(p / width) in kT from weighted samples (p normalized over all samples); NaN if empty."""
    weights = np.exp(log_w - logsumexp(log_w))
    probability, _ = np.histogram(values, bins=edges, weights=weights)
    with np.errstate(divide="ignore"):
        profile = -np.log(probability / np.diff(edges))
    profile[~np.isfinite(profile)] = np.nan
    return profile


def weighted_surface(x: np.ndarray, y: np.ndarray, log_w: np.ndarray, x_edges, y_edges) -> np.ndarray:
    """2D F(x_bin, y_bin) = -ln(p / area) in kT; NaN where no weight falls."""
    weights = np.exp(log_w - logsumexp(log_w))
    probability, _, _ = np.histogram2d(x, y, bins=[x_edges, y_edges], weights=weights)
    area = np.outer(np.diff(x_edges), np.diff(y_edges))
    with np.errstate(divide="ignore"):
        surface = -np.log(probability / area)
    surface[~np.isfinite(surface)] = np.nan
    return surface


@dataclass
class BootstrapResult:
    estimate: np.ndarray
    standard_error: np.ndarray


def bootstrap(statistic, log_w: np.ndarray, replicates: int, seed: int, groups: np.ndarray | None = None
              ) -> BootstrapResult:
    """Point estimate and bootstrap standard error of ``statistic(log_w)``.

    Each replicate resamples the N samples with replacement; it is expressed as multiplicity weights
    (log w + ln count), so ``statistic`` sees the original sample order and only needs log-weights.
    With ``groups`` (an integer label per sample, e.g. the MCMC chain) whole groups are resampled
    instead, so that correlation within a group widens the error as it should.
    Non-finite replicate values are ignored in the standard error.
    """
    rng = np.random.default_rng(seed)
    n = len(log_w)
    estimate = np.asarray(statistic(log_w), dtype=float)
    if groups is not None:
        labels, group_index = np.unique(groups, return_inverse=True)
    values = []
    for _ in range(replicates):
        if groups is None:
            counts = rng.multinomial(n, np.full(n, 1.0 / n))
        else:
            counts = rng.multinomial(len(labels), np.full(len(labels), 1.0 / len(labels)))[group_index]
        with np.errstate(divide="ignore"):
            values.append(np.asarray(statistic(log_w + np.log(counts)), dtype=float))
    values = np.array(values)
    values[~np.isfinite(values)] = np.nan
    with np.errstate(invalid="ignore"):
        error = np.nanstd(values, axis=0, ddof=1) if replicates > 1 else np.full_like(estimate, np.nan)
    return BootstrapResult(estimate, error)


# ---------------------------------------------------------------- diagnostics of importance weights


def effective_samples(log_w: np.ndarray) -> float:
    """Kish effective number of samples (Σw)² / Σw² of the finite log-weights (0 with none)."""
    log_w = np.asarray(log_w, dtype=float)
    finite = log_w[np.isfinite(log_w)]
    if len(finite) == 0:
        return 0.0
    return float(np.exp(2 * logsumexp(finite) - logsumexp(2 * finite)))


def binned_effective_samples(index: np.ndarray, log_w: np.ndarray, n_bins: int) -> np.ndarray:
    """Kish effective number of samples in each bin, for integer bin indices (outside [0, n_bins): ignored)."""
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    inside = (index >= 0) & (index < n_bins) & np.isfinite(log_w)
    if not inside.any():
        return np.zeros(n_bins)
    shift = log_w[inside].max()
    w = np.exp(log_w[inside] - shift)
    total = np.bincount(index[inside], weights=w, minlength=n_bins)
    squares = np.bincount(index[inside], weights=w * w, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(squares > 0, total * total / squares, 0.0)


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The bin of each value for ``np.histogram``'s convention (last bin closed); -1 outside."""
    index = np.searchsorted(edges, values, side="right") - 1
    index[values == edges[-1]] = len(edges) - 2
    index[(values < edges[0]) | (values > edges[-1]) | ~np.isfinite(values)] = -1
    return index


def surface_bin_index(x: np.ndarray, y: np.ndarray, x_edges: np.ndarray, y_edges: np.ndarray) -> np.ndarray:
    """The flat bin (x_bin * n_y + y_bin) of each point on a 2D grid; -1 outside (``bin_index`` per axis)."""
    index_x, index_y = bin_index(x, x_edges), bin_index(y, y_edges)
    return np.where((index_x >= 0) & (index_y >= 0), index_x * (len(y_edges) - 1) + index_y, -1)


def resampled_divergences(reference: np.ndarray, model_probability: np.ndarray, n_draws: int, repeats: int,
                          seed: int) -> tuple[float, float]:
    """(KL, JS) in nats between the ``reference`` histogram and histograms of ``n_draws`` draws from the
    bin probabilities ``model_probability``, averaged over ``repeats`` draws.

    The plug-in KL/JS of a histogram are biased upwards by a term that shrinks with the number of samples,
    so estimators with more samples would look better for that reason alone. Drawing the same number of
    samples from every estimator's (weighted) histogram puts them on an equal footing: each is compared at
    ``n_draws`` samples, and a perfect sampler scores the noise floor of that sample count.
    """
    probability = np.nan_to_num(np.asarray(model_probability, dtype=float), nan=0.0).ravel()
    if probability.sum() <= 0:
        return np.nan, np.nan
    rng = np.random.default_rng(seed)
    values = [histogram_divergences(reference, rng.multinomial(n_draws, probability / probability.sum()))
              for _ in range(repeats)]
    return float(np.mean([v[0] for v in values])), float(np.mean([v[1] for v in values]))


def replicate_spread(statistic, log_w: np.ndarray, replicate: np.ndarray) -> BootstrapResult:
    """Estimate from all samples of independent runs pooled, standard error from the runs' spread.

    ``replicate`` labels the run of each sample. Each run's estimate is ``statistic`` of its own samples
    (the others' weights set to zero); the standard error of the pooled estimate is their standard deviation
    over √R, widened for the few degrees of freedom (below). A run whose value is not finite where the
    pooled one is (a state it missed) makes the error infinite: the runs disagree beyond what a finite
    error can describe. With one run the error is NaN.
    """
    estimate = np.asarray(statistic(log_w), dtype=float)
    labels = np.unique(replicate)
    values = np.array([statistic(np.where(replicate == label, log_w, -np.inf)) for label in labels], dtype=float)
    if len(labels) < 2:
        return BootstrapResult(estimate, np.full_like(estimate, np.nan))
    # With few runs the spread is itself uncertain (R - 1 degrees of freedom): the error is widened so
    # that ±2 errors is the t-interval of the same coverage as ±2σ of a normal (95.4 %), e.g. ×1.59 at R = 4.
    from scipy.stats import norm, t

    widen = t.ppf(norm.cdf(2.0), len(labels) - 1) / 2.0
    with np.errstate(invalid="ignore"):
        error = widen * np.std(values, axis=0, ddof=1) / np.sqrt(len(labels))
    missed = ~np.isfinite(values).all(axis=0) & np.isfinite(estimate)
    error[missed] = np.inf
    return BootstrapResult(estimate, error)


def copy_groups(positions: np.ndarray) -> np.ndarray:
    """A label per sample, equal for identical samples (SMC's resampled copies, MCMC's rejected moves)."""
    flat = np.ascontiguousarray(np.asarray(positions).reshape(len(positions), -1))
    return np.unique(flat, axis=0, return_inverse=True)[1].ravel()


def merge_copies(log_w: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log of the summed weight of each group of identical samples, the first sample of each group).

    Copies of one sample carry no more information than the sample: effective sample counts and the
    weights' tail are computed on the merged weights.
    """
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    _, first = np.unique(groups, return_index=True)
    finite = np.isfinite(log_w)
    if not finite.any():
        return np.full(len(first), -np.inf), first
    shift = log_w[finite].max()
    sums = np.bincount(groups, weights=np.exp(log_w - shift), minlength=len(first))
    with np.errstate(divide="ignore"):
        return np.log(sums[np.unique(groups)]) + shift, first
