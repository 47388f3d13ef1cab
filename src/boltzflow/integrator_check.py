"""Discretization error of probability-flow likelihoods, measured per run by step doubling.

The score samplers draw x = Φ_n(z) with n fixed RK4 steps of the probability-flow ODE and give it the
log-density log q_n(x) = log N(z) + (RK4 quadrature of ∫ div v along the discrete path). That is the
density of neither the continuous ODE's map nor the RK4 map exactly: log w_n = -u(x) - log q_n is off by
an error ε_n(z) = O(h⁴) per sample, and for sharp densities (a narrow component makes the ODE stiff near
t_min) it is large and of one sign. Both flow-perturbation estimators carry an error of the same order
(their backward RK4 steps invert the forward ones only to O(h⁴)); this check measures it with the exact
divergence, which isolates the discretization from the probes' noise.

The check integrates the SAME latents z with the exact divergence at n and at 2n steps and compares the
estimates the two sets of weights give. Estimator (``integrator_error``): for each state s,

    e_s = 2⁴/(2⁴ - 1) × (ΔF̂_s(n) - ΔF̂_s(2n)),

with ΔF̂_s(m) = -ln(Σ_{i∈s} w_i(m) / Σ_{i∈ref} w_i(m)) the self-normalized estimate from the m-step
samples (each with its own endpoint's state), and likewise for ln Ẑ = ln mean w. Why this one:

- it is the quantity a user needs, the shift of the reported ΔF, not a per-sample error: a constant ε
  cancels from ΔF (it only moves ln Z), and what matters is how ε varies between states;
- x_n and x_2n are both exact draws of their own sampler, so the expectation of ΔF̂(n) - ΔF̂(2n) is
  bias_n - bias_2n; the latents are shared, so most of the sampling noise of the two estimates cancels
  and a few hundred latents resolve shifts of 0.01 kT;
- RK4 is fourth order, so bias_2n ≈ bias_n / 16 and bias_n ≈ 16/15 (ΔF̂(n) - ΔF̂(2n)) (Richardson).
  That factor assumes the asymptotic regime; when the step is too coarse for it (the error does not
  fall ~16× per doubling) the estimate is still of the right sign and size, but the run should take
  more steps anyway, which is what a large ``integrator_error`` says.

Sign: e_s > 0 means the n-step ΔF of state s is too high (in kT, relative to the first state); likewise
for ln Z. ``integrator_error_err`` is a bootstrap standard error over the checked latents (pairs kept
together), so a reader can tell a measured error from noise.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable

import numpy as np

from boltzflow import estimators

#: Order of the integrator (RK4): doubling the steps divides its global error by 2**ORDER.
ORDER = 4
#: Bootstrap replicates of the standard error (cheap: the statistic is a few sums over the subsample).
BOOTSTRAP = 200


@dataclasses.dataclass
class IntegratorCheck:
    """What step doubling measured on ``n_samples`` latents at ``n_steps`` against 2 × ``n_steps``.

    ``delta_f_error`` [state] and its standard error in kT (NaN for a state the subsample misses),
    ``log_z_error`` and its standard error in nats, ``mean_log_w_shift`` the mean per-sample
    δ = log w_n - log w_2n in nats (over samples finite at both), all with the conventions of the module
    docstring (the first two Richardson-scaled by 16/15, δ not).
    """

    n_samples: int
    n_steps: int
    delta_f_error: np.ndarray
    delta_f_error_err: np.ndarray
    log_z_error: float
    log_z_error_err: float
    mean_log_w_shift: float

    @classmethod
    def disabled(cls, n_states: int, n_steps: int) -> IntegratorCheck:
        nan = np.full(n_states, np.nan)
        return cls(0, n_steps, nan, nan.copy(), math.nan, math.nan, math.nan)


def step_doubling_weights(decode: Callable, reduced_energy: Callable, latent, n_steps: int, batch_size: int):
    """(x_n, log w_n, x_2n, log w_2n) as numpy for the same latents at ``n_steps`` and 2 × ``n_steps``.

    ``decode(latent [b, d], steps) -> (x, log q)`` must use the exact divergence; ``reduced_energy(x)``
    gives u. Non-finite log-weights are -inf (zero weight), as everywhere else.
    """
    import torch

    def weights(steps):
        xs, log_ws = [], []
        with torch.no_grad():
            for start in range(0, len(latent), batch_size):
                x, log_q = decode(latent[start:start + batch_size], steps)
                log_w, _ = estimators.log_weights(reduced_energy(x).double().cpu().numpy(),
                                                  log_q.double().cpu().numpy())
                xs.append(x.double().cpu().numpy())
                log_ws.append(log_w)
        return np.concatenate(xs), np.concatenate(log_ws)

    return (*weights(n_steps), *weights(2 * n_steps))


def _shift(log_w_n, log_w_2n, cvs_n, cvs_2n, states) -> np.ndarray:
    """[ΔF̂(n) - ΔF̂(2n) per state, ln Ẑ(n) - ln Ẑ(2n)], NaN where either side is undefined."""
    with np.errstate(invalid="ignore"):
        delta_f = (estimators.state_delta_f(log_w_n, cvs_n, states)
                   - estimators.state_delta_f(log_w_2n, cvs_2n, states))
        log_z = estimators.log_partition_function(log_w_n) - estimators.log_partition_function(log_w_2n)
    values = np.append(delta_f, log_z)
    return np.where(np.isfinite(values), values, np.nan)


def integrator_error(log_w_n, log_w_2n, cvs_n: dict, cvs_2n: dict, states, n_steps: int,
                     seed: int = 0) -> IntegratorCheck:
    """The Richardson-scaled shift of ΔF and ln Z between n and 2n steps (module docstring) from paired
    weights [n_samples] and the CVs of each endpoint, with bootstrap standard errors over the pairs."""
    log_w_n, log_w_2n = np.asarray(log_w_n, dtype=float), np.asarray(log_w_2n, dtype=float)
    scale = 2.0**ORDER / (2.0**ORDER - 1.0)

    # The bootstrap passes log-multiplicities; both weight sets get the same ones, so pairs stay together.
    def statistic(log_counts):
        return scale * _shift(log_w_n + log_counts, log_w_2n + log_counts, cvs_n, cvs_2n, states)

    with warnings.catch_warnings():
        # A state the subsample misses is NaN in every replicate; its NaN error says so without a warning.
        warnings.simplefilter("ignore", RuntimeWarning)
        result = estimators.bootstrap(statistic, np.zeros(len(log_w_n)), BOOTSTRAP, seed)
    both = np.isfinite(log_w_n) & np.isfinite(log_w_2n)
    mean_shift = float(np.mean(log_w_n[both] - log_w_2n[both])) if both.any() else math.nan
    n_states = len(states)
    return IntegratorCheck(len(log_w_n), n_steps, result.estimate[:n_states], result.standard_error[:n_states],
                           float(result.estimate[n_states]), float(result.standard_error[n_states]), mean_shift)


def check_integrator(system, decode: Callable, reduced_energy: Callable, latent_dim: int, n_steps: int,
                     n_samples: int, seed: int, batch_size: int, log=print) -> IntegratorCheck:
    """Step doubling on ``n_samples`` fresh latents N(0, I) (``seed``) for a model's ``decode``
    (see :func:`step_doubling_weights`); ``n_samples == 0`` disables the check (all NaN)."""
    import torch

    if n_samples == 0:
        log("integrator check disabled (integrator_check_samples = 0)")
        return IntegratorCheck.disabled(len(system.states), n_steps)
    latent = torch.randn(n_samples, latent_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x_n, log_w_n, x_2n, log_w_2n = step_doubling_weights(decode, reduced_energy, latent, n_steps, batch_size)
    check = integrator_error(log_w_n, log_w_2n, system.cv_values(x_n), system.cv_values(x_2n), system.states,
                             n_steps, seed)
    states = ", ".join(f"{state.name} {error:+.4f} ± {err:.4f}" for state, error, err in
                       zip(system.states, check.delta_f_error, check.delta_f_error_err))
    log(f"integrator check on {n_samples} latents, exact divergence at {n_steps} and {2 * n_steps} RK4 steps: "
        f"mean log w_n - log w_2n = {check.mean_log_w_shift:+.4f} nats per sample; estimated {n_steps}-step error "
        f"of ΔF (kT): {states}; of ln Z: {check.log_z_error:+.4f} ± {check.log_z_error_err:.4f}")
    return check
