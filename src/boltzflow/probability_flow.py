"""Sampling score models with the probability-flow ODE, with log-densities for reweighting.

For the VP SDE of ``scores.VPSchedule``, the probability-flow ODE (Song et al. 2021, arXiv:2011.13456,
eq. 13)

    dx/dt = v(x, t) = f(x, t) - ½ g(t)² score(x, t) = -½ β(t) [x + score(x, t)]

moves samples of p_t to samples of p_s for any s, t: it has the same marginals as the SDE when the
score is exact. Along a solution x(t), the density obeys the instantaneous change of variables
(Chen et al. 2018, arXiv:1806.07366)

    d/dt log p_t(x(t)) = -div v(x(t), t).

Sign convention used here. Sampling starts from x(1) ~ N(0, I) (the model's prior at t = 1) and
integrates *down* to t = t_min; the log-density of the returned x = x(t_min) under the model is

    log q(x) = log N(x(1); 0, I) + ∫_{t_min}^{1} div v(x(t), t) dt,

with the integral taken in increasing t (the path runs towards t = 1 where it is more spread out, so a
positive divergence there raises log q at the data end). The same formula, integrating *up* from data
x(t_min) = x, evaluates log q at given points (``probability_flow_log_prob``).

q is the density of the ODE map, which is what the model samples, not the data density: any
error in the score changes q, but the weights w = exp(-u) / q stay correct for the samples drawn, up
to the integrator error. Both x and the integral are solved by the same fixed-step RK4, so log q
converges as O(h⁴) in the step h; it is not the exact density of the discrete RK4 map.

Conventions: x [batch, dim] in the units of the data, log-densities [batch] in nats with respect to the
Lebesgue measure in those units (so log w = -u(x) - log q(x) for a reduced energy u), t dimensionless.

A *divergence estimator* is a function ``divergence(v, x, t) -> (velocity, div)`` with v a callable
(x [batch, dim], t [batch]) -> [batch, dim] that acts on each row separately, and velocity = v(x, t),
div ≈ div v(x, t), both [batch] / [batch, dim] and detached. ``exact_divergence`` is one;
``functools.partial(hutchinson_divergence, n_probes=..., generator=...)`` is another.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from boltzflow.scores import VPSchedule

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
DivergenceEstimator = Callable[[Velocity, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def probability_flow_velocity(model: nn.Module, schedule: VPSchedule, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """v(x, t) = f(x, t) - ½ g(t)² score(x, t) [batch, dim], the probability-flow ODE's right-hand side."""
    return schedule.drift(x, t) - 0.5 * schedule.diffusion(t).pow(2)[:, None] * model(x, t)


def exact_divergence(v: Velocity, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(v(x, t), tr ∂v/∂x), the divergence exactly, with one backward pass per dimension.

    Because v acts on each row separately, the gradient of Σ_batch v_i with respect to x holds
    ∂v_i/∂x_i of every row in column i, so ``dim`` backward passes give the whole trace for the batch.
    Cost: ``dim`` times a vector-Jacobian product; for large dim use ``hutchinson_divergence``.
    Both outputs are detached.
    """
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        velocity = v(x_in, t)
        divergence = torch.zeros(x.shape[0], dtype=velocity.dtype, device=velocity.device)
        for i in range(x.shape[1]):
            (row_gradients,) = torch.autograd.grad(velocity[:, i].sum(), x_in, retain_graph=i < x.shape[1] - 1)
            divergence = divergence + row_gradients[:, i]
    return velocity.detach(), divergence.detach()


def no_divergence(v: Velocity, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(v(x, t), 0): the path alone, for solvers that need no log-density (flow perturbation)."""
    velocity = v(x, t).detach()
    return velocity, torch.zeros(x.shape[0], dtype=velocity.dtype, device=velocity.device)


def hutchinson_divergence(
    v: Velocity,
    x: torch.Tensor,
    t: torch.Tensor,
    n_probes: int = 1,
    generator: torch.Generator | None = None,
    distribution: str = "rademacher",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(v(x, t), Hutchinson estimate of tr ∂v/∂x): mean over probes ε of εᵀ (∂v/∂x) ε.

    Probes ε [n_probes, batch, dim] have E[ε εᵀ] = I: ``"rademacher"`` (±1 each, the lower-variance
    choice; variance 2 Σ_{i≠j} J_ij² per probe, J symmetrized) or ``"gaussian"`` (N(0, I)). They are
    drawn fresh at each call from ``generator`` (on its device, then moved). Cost: one vector-Jacobian
    product per probe, whatever the dimension. Both outputs are detached.

    Why log q is unbiased but the weight is not: the estimate of div v is unbiased at each call, the
    path x(t) does not depend on the probes (the velocity is evaluated exactly), and the integrator
    combines the divergence evaluations linearly, so the estimated log q has expectation the
    exactly-integrated log q. The importance weight is exp(-u - log q̂), a convex function of log q̂,
    so by Jensen's inequality E[exp(-log q̂)] > exp(-E[log q̂]) = 1/q whenever the estimate varies:
    the weights are biased upwards, by a factor ≈ exp(Var[log q̂] / 2) for Gaussian noise, and the
    factor differs from sample to sample, so self-normalized estimates are biased too. Use more probes
    (the variance falls as 1/n_probes) or ``exact_divergence`` when the weights matter.
    """
    if n_probes < 1:
        raise ValueError(f"n_probes must be >= 1, got {n_probes}")
    noise_device = generator.device if generator is not None else x.device
    shape = (n_probes, *x.shape)
    if distribution == "rademacher":
        bits = torch.randint(0, 2, shape, generator=generator, device=noise_device)
        probes = (2 * bits - 1).to(x.dtype)
    elif distribution == "gaussian":
        probes = torch.randn(shape, generator=generator, device=noise_device, dtype=x.dtype)
    else:
        raise ValueError(f"distribution must be 'rademacher' or 'gaussian', got {distribution!r}")
    probes = probes.to(x.device)

    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        velocity = v(x_in, t)
        estimate = torch.zeros(x.shape[0], dtype=velocity.dtype, device=velocity.device)
        for k in range(n_probes):
            (vjp,) = torch.autograd.grad((velocity * probes[k]).sum(), x_in, retain_graph=k < n_probes - 1)
            estimate = estimate + (vjp * probes[k]).sum(dim=-1)
    return velocity.detach(), (estimate / n_probes).detach()


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) [batch] for z [batch, dim]."""
    return -0.5 * z.pow(2).sum(dim=-1) - 0.5 * z.shape[1] * math.log(2.0 * math.pi)


def integrate_probability_flow(
    model: nn.Module,
    schedule: VPSchedule,
    x: torch.Tensor,
    t_start: float,
    t_end: float,
    n_steps: int,
    divergence: DivergenceEstimator = exact_divergence,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve the probability-flow ODE from x(t_start) = x to t_end with ``n_steps`` RK4 steps.

    Returns (x(t_end) [batch, dim], ∫_{t_start}^{t_end} div v(x(t), t) dt [batch]), the integral
    oriented from t_start to t_end (negative step when t_end < t_start), both detached.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    velocity = partial(probability_flow_velocity, model, schedule)
    h = (t_end - t_start) / n_steps
    x = x.detach()
    integral = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def at(time: float) -> torch.Tensor:
        return torch.full((x.shape[0],), time, dtype=x.dtype, device=x.device)

    for step in range(n_steps):
        t = t_start + step * h
        k1, d1 = divergence(velocity, x, at(t))
        k2, d2 = divergence(velocity, x + 0.5 * h * k1, at(t + 0.5 * h))
        k3, d3 = divergence(velocity, x + 0.5 * h * k2, at(t + 0.5 * h))
        k4, d4 = divergence(velocity, x + h * k3, at(t + h))
        x = x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        integral = integral + (h / 6.0) * (d1 + 2.0 * d2 + 2.0 * d3 + d4)
    return x, integral


def _check_schedule(model: nn.Module, schedule: VPSchedule) -> None:
    if getattr(model, "schedule", schedule) != schedule:
        raise ValueError(f"the model was built for {model.schedule}, not {schedule}")


def sample_probability_flow(
    model: nn.Module,
    schedule: VPSchedule,
    n: int,
    n_steps: int = 100,
    divergence: DivergenceEstimator = exact_divergence,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw n samples from the score model's probability flow; returns (x [n, dim], log q(x) [n]).

    x(1) ~ N(0, I) is drawn from ``generator`` (on its device, then moved to the model's) and carried
    down to t_min with ``n_steps`` RK4 steps; log q(x) = log N(x(1); 0, I) + ∫_{t_min}^{1} div v dt
    (see the module docstring). ``model`` needs a ``dim`` attribute; its device and dtype are those of
    its first buffer (else parameter). The results are detached.
    """
    _check_schedule(model, schedule)
    reference = next(model.buffers(), None)
    if reference is None or not reference.is_floating_point():
        reference = next(model.parameters())
    noise_device = generator.device if generator is not None else reference.device
    x1 = torch.randn(n, model.dim, generator=generator, device=noise_device, dtype=reference.dtype)
    x1 = x1.to(reference.device)
    x, integral_down = integrate_probability_flow(model, schedule, x1, 1.0, schedule.t_min, n_steps, divergence)
    # integral_down runs from 1 to t_min: its negative is the integral from t_min to 1.
    return x, standard_normal_log_prob(x1) - integral_down


def probability_flow_log_prob(
    model: nn.Module,
    schedule: VPSchedule,
    x: torch.Tensor,
    n_steps: int = 100,
    divergence: DivergenceEstimator = exact_divergence,
) -> torch.Tensor:
    """log q(x) [batch] of given points x [batch, dim] under the model's probability flow (detached).

    Carries x up from t_min to 1 and returns log N(x(1); 0, I) + ∫_{t_min}^{1} div v dt; with the same
    ``n_steps`` it agrees with the log q of ``sample_probability_flow`` up to the integrator error.
    """
    _check_schedule(model, schedule)
    x1, integral_up = integrate_probability_flow(model, schedule, x, schedule.t_min, 1.0, n_steps, divergence)
    return standard_normal_log_prob(x1) + integral_up
