"""Flow perturbation: unbiased importance weights of the probability-flow ODE without its Jacobian.

Peng & Gao, arXiv:2407.10666 (Nat. Commun. 2025), and the multi-step variant Flow Perturbation++,
arXiv:2601.21177. Here is the construction as implemented (our own code, notation of
``probability_flow``).

The sampler maps prior noise z ~ N(0, I) at t = 1 to x = Φ(z) at t_min with a fixed-step RK4 solve of the
probability-flow ODE. The exact weight is w = exp(-u(x)) |det ∂x/∂z| / N(z; 0, I), and the
brute-force |det ∂x/∂z| costs D backward passes per solver stage. Flow perturbation replaces it by a
random variable whose *expectation* is |det ∂x/∂z|:

    for invertible A and a direction ε̂ uniform on the unit sphere,  E[ |A ε̂|^(-D) ] = 1 / |det A|

(the volume of the ellipsoid {x : |A x| ≤ 1} computed two ways). With A = ∂z/∂x, the Jacobian of the
*backward* map, ε ~ N(0, I) (only its direction matters) and a small δ,

    α² = |G(x + δε) - G(x - δε)|² / (4 |δε|²)  ≈ |A ε̂|²,    S = -(D/2) ln α²,    E[e^S] = |det ∂x/∂z|,

where G is the backward solve x → z (two solves per probe; the central difference is accurate to
O(δ²)). The estimated weight ŵ = exp(-u(x) - ln N(z) + S) is then unbiased for w, and so are
self-normalized estimates in the limit of many samples (the samples (z, ε) are draws of an extended
space whose z-marginal, weighted by ŵ, is the target). This is the per-sample optimal perturbation of
the paper (σ_f chosen so that the backward perturbation has the forward one's length), which needs no
trained variance network. Averaging M probes as ln mean_m exp(S_m) stays unbiased, at M times the
backward cost. Contrast Hutchinson: it is unbiased for ln|det|, so exp of it is biased (Jensen).

Single step (``multistep=False``): S from the whole map Φ, G = the RK4 solve from t_min back to 1.
The variance of S grows with the anisotropy of ∂x/∂z, which is large for a noise-to-data map in many
dimensions (O(D)).

Multi-step (Flow Perturbation++, ``multistep=True``): each RK4 step F_k (t_k → t_{k+1}) gets its own
probe, with G_k the RK4 step back (t_{k+1} → t_k); the probes are independent, so
E[exp(Σ_k S_k)] = Π_k 1/|det ∂G_k| ≈ |det ∂x/∂z|. The backward RK4 step is the inverse of the forward
one only up to the integrator's error, so both flow-perturbation weights are unbiased up to that O(h⁴)
error and the O(δ²) of the central difference, like the exact divergence integrated by RK4. Each step's Jacobian is close to
the identity, so the variance falls roughly as 1/K for K steps, at the same cost: one forward solve plus
two backward solves per probe, i.e. 3 solves against 1 + D for the exact divergence.

Conventions: tensors [batch, dim] in the units the model works in; ``probes`` are standard-normal
draws, [n_probes, batch, dim] (single step) or [n_steps, n_probes, batch, dim] (multi-step); they are
explicit arguments so that a sampler can treat them as part of the latent state (``smc``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from boltzflow.probability_flow import integrate_probability_flow, no_divergence, standard_normal_log_prob
from boltzflow.scores import VPSchedule

#: Finite-difference half-width δ of the perturbation (in the model's standardized units), as in the paper.
DELTA = 1e-3


def time_grid(schedule: VPSchedule, n_steps: int) -> list[float]:
    """The solver's times from 1 down to t_min, uniform, n_steps + 1 of them."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    h = (schedule.t_min - 1.0) / n_steps
    return [1.0 + k * h for k in range(n_steps)] + [schedule.t_min]


def _solve(model, schedule, x: torch.Tensor, t_start: float, t_end: float, n_steps: int) -> torch.Tensor:
    """The RK4 path of ``probability_flow.integrate_probability_flow`` without the divergence."""
    return integrate_probability_flow(model, schedule, x, t_start, t_end, n_steps, no_divergence)[0]


def stretching_log_det(backward, x: torch.Tensor, probes: torch.Tensor, delta: float = DELTA) -> torch.Tensor:
    """S [batch] with E[exp S] = |det ∂forward/∂z| at x, from the backward map and probes [P, batch, dim].

    ``backward`` maps [m, dim] → [m, dim]; it is called once on all 2 P perturbed copies of x.
    With P > 1 the estimate is ln mean_p exp(S_p), still unbiased for the determinant.
    """
    n_probes, batch, dim = probes.shape
    shifts = delta * probes
    perturbed = torch.cat([(x + shifts).reshape(-1, dim), (x - shifts).reshape(-1, dim)])
    images = backward(perturbed)
    plus, minus = images[: n_probes * batch], images[n_probes * batch:]
    difference = (0.5 * (plus - minus)).reshape(n_probes, batch, dim)
    log_alpha_squared = torch.log(difference.pow(2).sum(-1)) - torch.log(shifts.pow(2).sum(-1))
    s = -0.5 * dim * log_alpha_squared
    return torch.logsumexp(s, dim=0) - math.log(n_probes)


@torch.no_grad()
def perturbation_sample(
    model: nn.Module,
    schedule: VPSchedule,
    z: torch.Tensor,
    probes: torch.Tensor,
    n_steps: int,
    multistep: bool,
    delta: float = DELTA,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x = Φ(z) [batch, dim] and ln q̂(x) = ln N(z; 0, I) - S [batch], with exp(-ln q̂) unbiased for 1/q(x).

    ``probes``: [n_probes, batch, dim] for the single-step estimator, [n_steps, n_probes, batch, dim]
    for the multi-step one (a fresh set per RK4 step).
    """
    if multistep:
        if probes.shape[0] != n_steps:
            raise ValueError(f"multi-step probes need a leading axis of n_steps = {n_steps}, got {probes.shape[0]}")
        times = time_grid(schedule, n_steps)
        x, s = z.detach(), torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for k, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
            x_next = _solve(model, schedule, x, t, t_next, 1)
            s = s + stretching_log_det(lambda y, t=t, t_next=t_next: _solve(model, schedule, y, t_next, t, 1),
                                       x_next, probes[k], delta)
            x = x_next
    else:
        x = _solve(model, schedule, z.detach(), 1.0, schedule.t_min, n_steps)
        s = stretching_log_det(lambda y: _solve(model, schedule, y, schedule.t_min, 1.0, n_steps), x, probes, delta)
    return x, standard_normal_log_prob(z) - s


def probe_shape(n_steps: int, n_probes: int, batch: int, dim: int, multistep: bool) -> tuple[int, ...]:
    return (n_steps, n_probes, batch, dim) if multistep else (n_probes, batch, dim)
