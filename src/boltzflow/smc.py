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


def run_smc(decode: Callable, reduced_energy: Callable, latent_dim: int, settings: SMCSettings,
            batch_size: int = 4096, log=print) -> SMCResult:
    """Anneal N particles from the model to the target (module docstring); numpy results.

    ``decode(ξ [b, latent_dim]) -> (x, log q̂)`` and ``reduced_energy(x) -> u`` work on torch tensors
    (float64); they are called in batches of ``batch_size``. Non-finite weights are -inf (never
    resampled, never accepted).
    """
    generator = torch.Generator().manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
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
