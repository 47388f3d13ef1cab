"""Sequential Monte Carlo from a generative model to the Boltzmann target, in the model's latent space.

Every model here is a deterministic map from standard-normal latent noise ξ to a sample x with a
log-density estimate log q̂ (``generators.FlowLatent``, ``generators.ScoreGenerator.decode``; for flow
perturbation ξ also holds the probes, see ``perturbation``). The importance weight of a latent is
ŵ(ξ) = exp(-u(x) - log q̂), and the annealed targets are

    π_β(ξ) ∝ N(ξ; 0, I) ŵ(ξ)^β,       β: 0 → 1.

π_0 is the latent prior, which the model's samples follow exactly (weight 0); π_1 has x-marginal the
Boltzmann distribution (exactly so for flow perturbation too: ŵ is an unbiased weight on the extended
space, as in Flow Perturbation++, arXiv:2601.21177). Between levels the particles are

- reweighted by ŵ^(β' - β), with β' chosen adaptively so that the conditional ESS of that increment
  given the current weights is ``ess_target`` × N (adaptive tempering: many levels where the model is
  poor, one where it is perfect; at most ``max_levels``, the last one jumping to β = 1);
- resampled (systematic) when the ESS falls below ``resample_threshold`` × N;
- moved by ``moves_per_level`` Metropolis–Hastings steps with the preconditioned Crank–Nicolson
  proposal ξ' = sqrt(1 - ρ²) ξ + ρ η, η ~ N(0, I), accepted with min(1, (ŵ(ξ')/ŵ(ξ))^β). The proposal
  leaves N(0, I) invariant, so this is exact for π_β; ρ adapts per level towards 30 % acceptance.

Why not Langevin/MALA in x: the move needs ∇ log π_β, and for a score model log q̂ comes out of an ODE
solve, whose gradient costs D backward passes per stage, the very cost flow perturbation avoids. The
latent moves need only forward evaluations, and the same kernel serves flows and score models.

The result carries the final log-weights, shifted so that log-mean-exp of them is the SMC estimate of
ln Z (the sum of the increments' log-mean weights), so downstream estimators read ln Z as for plain
importance sampling.

Errors come from independent replicates (``run_smc_replicates``), not from a bootstrap over the final
particles: after resampling those share ancestors, so a bootstrap over them is optimistic. R runs with
independent seeds give R independent estimates of ln Z and ΔF, whose spread is an honest error. Pooled,
the particles of every run (each run's weights shifted to its own ln Ẑ_r, equal particle counts) have
log-mean-exp ln mean_r Ẑ_r, which is unbiased for Z like each Ẑ_r.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy.special import logsumexp

from boltzflow.estimators import ess_fraction
from boltzflow.settings import SMCSettings


@dataclasses.dataclass
class SMCResult:
    positions: np.ndarray
    log_w: np.ndarray
    reduced_energy: np.ndarray
    log_z: float
    betas: np.ndarray
    acceptance: np.ndarray
    ess_before_resampling: np.ndarray
    resamplings: int


def _conditional_ess_fraction(log_w: np.ndarray, increment: np.ndarray) -> float:
    """Conditional ESS / N of an increment given the current weights (Zhou, Johansen & Aston 2016):
    (Σ W_i v_i)² / Σ W_i v_i² with W the normalized current weights and v = exp(increment)."""
    combined = log_w + increment
    finite = np.isfinite(combined)
    if not finite.any():
        return 0.0
    top_w, top_v = np.max(log_w[np.isfinite(log_w)]), np.max(increment[finite])
    weights = np.exp(log_w[finite] - top_w)
    weights /= np.exp(log_w[np.isfinite(log_w)] - top_w).sum()
    v = np.exp(increment[finite] - top_v)
    return float((weights * v).sum() ** 2 / (weights * v * v).sum())


def _next_beta(beta: float, log_w: np.ndarray, log_w_model: np.ndarray, target_fraction: float) -> float:
    """The largest β' ≤ 1 whose increment ŵ^(β' - β) keeps a conditional ESS of target_fraction × N."""
    def fraction(next_beta):
        with np.errstate(invalid="ignore"):
            increment = np.where(np.isfinite(log_w_model), (next_beta - beta) * log_w_model, -np.inf)
        return _conditional_ess_fraction(log_w, increment)

    if fraction(1.0) >= target_fraction:
        return 1.0
    lo, hi = beta, 1.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if fraction(mid) >= target_fraction else (lo, mid)
    return min(1.0, max(lo, beta + 1e-6))


def systematic_resample(log_w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of N particles resampled in proportion to exp(log_w) (systematic: one uniform draw)."""
    n = len(log_w)
    w = np.exp(log_w - np.max(log_w))
    cumulative = np.cumsum(w / w.sum())
    cumulative[-1] = 1.0
    return np.searchsorted(cumulative, (rng.random() + np.arange(n)) / n)


def replicate_seeds(seed: int, replicates: int) -> list[int]:
    """Seeds of ``replicates`` independent runs derived from one ``seed`` (numpy's SeedSequence spawning,
    so that the streams of different replicates, and of different base seeds, do not overlap)."""
    return [int(child.generate_state(1)[0]) for child in np.random.SeedSequence(seed).spawn(replicates)]


@dataclasses.dataclass
class SMCReplicates:
    """``replicates`` independent SMC runs: one :class:`SMCResult` each, and their pooled particles."""

    runs: list[SMCResult]
    seeds: list[int]

    @property
    def positions(self) -> np.ndarray:
        return np.concatenate([run.positions for run in self.runs])

    @property
    def log_w(self) -> np.ndarray:
        """Every run's stored weights (log-mean-exp within run r = ln Ẑ_r), concatenated."""
        return np.concatenate([run.log_w for run in self.runs])

    @property
    def reduced_energy(self) -> np.ndarray:
        return np.concatenate([run.reduced_energy for run in self.runs])

    @property
    def replicate(self) -> np.ndarray:
        """The run each particle comes from [n_total]."""
        return np.concatenate([np.full(len(run.log_w), r) for r, run in enumerate(self.runs)])

    @property
    def log_z(self) -> np.ndarray:
        """ln Ẑ_r of each run."""
        return np.array([run.log_z for run in self.runs])

    @property
    def pooled_log_z(self) -> float:
        """ln mean_r Ẑ_r, the log-mean-exp of all pooled weights (the runs have equal particle counts)."""
        return float(logsumexp(self.log_z) - math.log(len(self.runs)))

    def per_level(self, name: str) -> np.ndarray:
        """A per-level record [replicate, level] (``betas`` without the initial 0, ``acceptance``,
        ``ess_before_resampling``), NaN-padded: runs may take different numbers of levels."""
        rows = [getattr(run, name)[1:] if name == "betas" else getattr(run, name) for run in self.runs]
        table = np.full((len(rows), max(len(row) for row in rows)), np.nan)
        for r, row in enumerate(rows):
            table[r, :len(row)] = row
        return table


def run_smc_replicates(decode: Callable, reduced_energy: Callable, latent_dim: int, settings: SMCSettings,
                       batch_size: int = 4096, log=print) -> SMCReplicates:
    """``settings.replicates`` independent runs of :func:`run_smc` with seeds from :func:`replicate_seeds`."""
    seeds = replicate_seeds(settings.seed, settings.replicates)
    runs = []
    for r, seed in enumerate(seeds):
        log(f"SMC replicate {r + 1}/{len(seeds)} (seed {seed})")
        runs.append(run_smc(decode, reduced_energy, latent_dim, settings, batch_size, log, seed=seed))
    result = SMCReplicates(runs, seeds)
    spread = np.std(result.log_z, ddof=1) if len(runs) > 1 else math.nan
    log(f"SMC over {len(runs)} replicates: ln Z per replicate {np.array2string(result.log_z, precision=4)}, "
        f"pooled {result.pooled_log_z:.4f}, standard deviation between replicates {spread:.4f}")
    return result


def run_smc(decode: Callable, reduced_energy: Callable, latent_dim: int, settings: SMCSettings,
            batch_size: int = 4096, log=print, seed: int | None = None) -> SMCResult:
    """Anneal N = ``settings.n_particles`` particles from the model to the target (module docstring), one
    run with ``seed`` (default ``settings.seed``); numpy results.

    ``decode(ξ [b, latent_dim]) -> (x, log q̂)`` and ``reduced_energy(x) -> u`` work on torch tensors
    (float64); they are called in batches of ``batch_size``. Non-finite weights are -inf (never
    resampled, never accepted).
    """
    seed = settings.seed if seed is None else seed
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = settings.n_particles

    def evaluate(latent):
        xs, log_ws, us = [], [], []
        for start in range(0, len(latent), batch_size):
            x, log_q = decode(latent[start:start + batch_size])
            u = reduced_energy(x)
            lw = (-u - log_q).double()
            lw = torch.where(torch.isfinite(lw), lw, torch.full_like(lw, -math.inf))
            xs.append(x.cpu())
            log_ws.append(lw.cpu())
            us.append(u.double().cpu())
        return torch.cat(xs), torch.cat(log_ws).numpy(), torch.cat(us).numpy()

    started = time.perf_counter()
    latent = torch.randn(n, latent_dim, generator=generator, dtype=torch.float64)
    x, log_w_model, u = evaluate(latent)
    log(f"SMC with {n} particles over a {latent_dim}-dimensional latent space: initial ESS/N "
        f"{ess_fraction(log_w_model):.4f}")
    log_w = np.zeros(n)  # weights of the particles with respect to the current π_β
    log_z = 0.0
    beta, betas, acceptance, ess_record, resamplings = 0.0, [0.0], [], [], 0
    step = settings.initial_step
    while beta < 1.0:
        if len(betas) == settings.max_levels:
            log(f"reached max_levels = {settings.max_levels}: jumping to β = 1")
            next_beta = 1.0
        else:
            next_beta = _next_beta(beta, log_w, log_w_model, settings.ess_target)
        increment = (next_beta - beta) * log_w_model
        increment = np.where(np.isfinite(increment), increment, -np.inf)
        combined = log_w + increment
        # ln Z_β' - ln Z_β = ln Σ W_i exp(increment_i) with W the normalized current weights.
        log_z += float(logsumexp(combined) - logsumexp(log_w))
        log_w, beta = combined, next_beta
        betas.append(beta)
        ess = ess_fraction(log_w)
        ess_record.append(ess)
        if ess < settings.resample_threshold and beta < 1.0:
            index = systematic_resample(log_w, rng)
            latent, x, log_w_model, u = latent[index], x[index], log_w_model[index], u[index]
            log_w = np.zeros(n)
            resamplings += 1
        accepted = 0
        for _ in range(settings.moves_per_level):
            noise = torch.randn(n, latent_dim, generator=generator, dtype=torch.float64)
            proposal = math.sqrt(1.0 - step * step) * latent + step * noise
            x_new, log_w_new, u_new = evaluate(proposal)
            with np.errstate(invalid="ignore"):  # -inf - -inf: both outside the map, never accepted
                log_ratio = beta * (log_w_new - log_w_model)
            log_ratio = np.where(np.isnan(log_ratio), -np.inf, log_ratio)
            accept = np.log(rng.random(n)) < log_ratio
            mask = torch.as_tensor(accept)
            latent = torch.where(mask[:, None], proposal, latent)
            x = torch.where(mask.reshape(-1, *([1] * (x.ndim - 1))), x_new, x)
            log_w_model = np.where(accept, log_w_new, log_w_model)
            u = np.where(accept, u_new, u)
            accepted += int(accept.sum())
        rate = accepted / max(1, n * settings.moves_per_level)
        acceptance.append(rate)
        step = float(np.clip(step * math.exp(rate - 0.3), 1e-3, 1.0))
        elapsed = time.perf_counter() - started
        log(f"  level {len(betas) - 1}: β = {beta:.4f}  ESS/N {ess:.3f}  acceptance {rate:.3f}  "
            f"step {step:.3f}  {elapsed:.1f} s elapsed")
    log(f"SMC done: {len(betas) - 1} levels, {resamplings} resamplings, ln Z = {log_z:.4f}, "
        f"final ESS/N {ess_fraction(log_w):.4f}")
    # Shift so that log-mean-exp of the stored weights is the SMC ln Z.
    stored = log_w - logsumexp(log_w) + math.log(n) + log_z
    return SMCResult(positions=x.numpy(), log_w=stored, reduced_energy=u, log_z=log_z, betas=np.array(betas),
                     acceptance=np.array(acceptance), ess_before_resampling=np.array(ess_record),
                     resamplings=resamplings)
