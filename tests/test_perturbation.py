"""Flow perturbation (single and multi-step) against analytic truths; Hutchinson's bias beside it."""

import math

import numpy as np
import pytest
import torch
from test_scores import AnalyticGaussianScore

from boltzflow.perturbation import perturbation_sample, probe_shape, stretching_log_det
from boltzflow.probability_flow import (
    exact_divergence,
    hutchinson_divergence,
    integrate_probability_flow,
    standard_normal_log_prob,
)
from boltzflow.scores import VPSchedule

# These checks are in float64 (the fixture restores the default dtype for the other modules).
pytestmark = pytest.mark.usefixtures("float64_default")

# Data (the score model's exact target) and a different Boltzmann target, both Gaussian, 4D, correlated,
# so that the ODE's Jacobian is anisotropic and not diagonal.
DIM = 4
ROTATION = torch.linalg.qr(torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(3), dtype=torch.float64))[0]
DATA_COVARIANCE = ROTATION @ torch.diag(torch.tensor([0.2, 0.6, 1.5, 3.0], dtype=torch.float64)) @ ROTATION.T
DATA_MEAN = torch.tensor([0.3, -0.2, 0.0, 0.5], dtype=torch.float64)
TARGET_PRECISION = torch.linalg.inv(1.3 * DATA_COVARIANCE)
TARGET_MEAN = DATA_MEAN + 0.2
SCHEDULE = VPSchedule(beta_min=0.1, beta_max=20.0, t_min=1e-3)
MODEL = AnalyticGaussianScore(DATA_MEAN, DATA_COVARIANCE, SCHEDULE)
N_STEPS = 20


def reduced_energy(x):
    d = x - TARGET_MEAN
    return 0.5 * torch.einsum("bi,ij,bj->b", d, TARGET_PRECISION, d)


# ln Z = ln ∫ exp(-u) = (D/2) ln 2π - ½ ln det(precision); P(x_0 < TARGET_MEAN_0) = ½.
LOG_Z = 0.5 * DIM * math.log(2 * math.pi) - 0.5 * float(torch.logdet(TARGET_PRECISION))


def weights(likelihood: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, DIM, generator=generator)
    if likelihood.startswith("perturbation"):
        multistep = likelihood == "perturbation_multistep"
        probes = torch.randn(probe_shape(N_STEPS, 1, n, DIM, multistep), generator=generator)
        x, log_q = perturbation_sample(MODEL, SCHEDULE, z, probes, N_STEPS, multistep)
    else:
        divergence = exact_divergence if likelihood == "exact" else (
            lambda v, x, t: hutchinson_divergence(v, x, t, n_probes=1, generator=generator))
        x, integral = integrate_probability_flow(MODEL, SCHEDULE, z, 1.0, SCHEDULE.t_min, N_STEPS, divergence)
        log_q = standard_normal_log_prob(z) - integral
    return x, -reduced_energy(x) - log_q


def test_stretching_factor_is_unbiased_for_the_determinant_of_a_linear_map():
    # E[exp S] = |det ∂forward| for backward = A (forward = A⁻¹): here 1/|det A|.
    matrix = torch.tensor([[0.5, 0.3, 0.0], [0.0, 1.2, -0.4], [0.2, 0.0, 2.0]])
    x = torch.zeros(1, 3)
    probes = torch.randn(400_000, 1, 3, generator=torch.Generator().manual_seed(0))
    s = torch.stack([stretching_log_det(lambda y: y @ matrix.T, x, chunk) for chunk in probes.split(1000)])
    # Each call averages 1000 probes (ln mean exp); the mean of exp over calls is then unbiased too.
    estimate = float(torch.exp(s).mean())
    assert estimate == pytest.approx(1.0 / abs(float(torch.linalg.det(matrix))), rel=0.01)


@pytest.mark.parametrize("likelihood", ["perturbation", "perturbation_multistep"])
def test_flow_perturbation_estimates_of_z_and_a_state_probability_are_unbiased(likelihood):
    # Z is the mean of the weights: unbiased for every sample size, so the average over seeds must
    # match the truth within its standard error (the exact weights would be deterministic per z).
    z_estimates, probabilities = [], []
    for seed in range(20):
        x, log_w = weights(likelihood, 4000, seed)
        w = torch.exp(log_w - LOG_Z)
        z_estimates.append(float(w.mean()))
        probabilities.append(float((w * (x[:, 0] < TARGET_MEAN[0])).sum() / w.sum()))
    z_estimates, probabilities = np.array(z_estimates), np.array(probabilities)
    error = z_estimates.std(ddof=1) / math.sqrt(len(z_estimates))
    assert abs(z_estimates.mean() - 1.0) < 3 * error + 2e-3, (z_estimates.mean(), error)
    p_error = probabilities.std(ddof=1) / math.sqrt(len(probabilities))
    assert abs(probabilities.mean() - 0.5) < 3 * p_error + 2e-3


def test_multistep_perturbation_has_lower_log_weight_variance_than_single_step():
    _, single = weights("perturbation", 4000, 0)
    _, multi = weights("perturbation_multistep", 4000, 0)
    _, exact = weights("exact", 4000, 0)
    assert float(multi.var()) < 0.5 * float(single.var())
    assert float(exact.var()) < float(multi.var())


def test_hutchinson_weights_are_biased_upwards():
    # ln q̂ is unbiased, so exp(-ln q̂) overestimates 1/q by Jensen: on the same ODE paths, the Hutchinson
    # weight divided by the exact one averages above 1 by many standard errors, by about exp(Var/2).
    ratios, variances = [], []
    for seed in range(5):
        hutchinson_x, hutchinson = weights("hutchinson", 4000, seed)
        exact_x, exact = weights("exact", 4000, seed)
        torch.testing.assert_close(hutchinson_x, exact_x)  # same z, same path: only ln q differs
        ratios.append(torch.exp(hutchinson - exact))
        variances.append(float((hutchinson - exact).var()))
    ratios = torch.cat(ratios)
    error = float(ratios.std()) / math.sqrt(len(ratios))
    bias = float(ratios.mean()) - 1.0
    assert bias > 5 * error, (bias, error)
    assert bias == pytest.approx(math.exp(np.mean(variances) / 2) - 1.0, rel=0.3)


def test_probe_count_must_match_the_steps_for_multistep():
    z = torch.zeros(3, DIM)
    with pytest.raises(ValueError, match="n_steps"):
        perturbation_sample(MODEL, SCHEDULE, z, torch.zeros(2, 1, 3, DIM), N_STEPS, multistep=True)


class AnalyticMixtureScore(torch.nn.Module):
    """Exact score of a 2D two-component Gaussian mixture diffused by the VP schedule: a nonlinear field,
    so that the ODE's Jacobian changes along the path and from point to point."""

    dim = 2

    def __init__(self, schedule):
        super().__init__()
        self.schedule = schedule
        self.means = torch.tensor([[-1.0, 0.5], [1.2, -0.3]], dtype=torch.float64)
        self.variances = torch.tensor([[0.3, 0.1], [0.15, 0.4]], dtype=torch.float64)
        self.log_weights = torch.log(torch.tensor([0.4, 0.6], dtype=torch.float64))

    def forward(self, x, t):
        # As ConservativeScore: keep the graph when grad is on, so that the divergence can be taken.
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            x_in = x if x.requires_grad else x.detach().requires_grad_(True)
            alpha = self.schedule.alpha(t)[:, None, None]
            variance = alpha**2 * self.variances + self.schedule.sigma_squared(t)[:, None, None]
            residual = x_in[:, None, :] - alpha * self.means
            log_components = -0.5 * (residual**2 / variance + torch.log(2 * math.pi * variance)).sum(-1)
            log_p = torch.logsumexp(log_components + self.log_weights, dim=-1)
            (score,) = torch.autograd.grad(log_p.sum(), x_in, create_graph=create_graph)
        return score


@pytest.mark.parametrize("multistep", [False, True], ids=["single-step", "multi-step"])
@pytest.mark.parametrize("n_probes", [1, 4])
def test_stretching_estimate_is_unbiased_for_the_jacobian_of_a_nonlinear_flow(multistep, n_probes):
    # For fixed prior points, E[exp S] over probes must equal |det ∂x/∂z| from the exact divergence.
    model = AnalyticMixtureScore(SCHEDULE)
    points = torch.tensor([[0.0, 0.0], [1.5, -1.0], [-0.7, 2.0]], dtype=torch.float64)
    repeats = 20000 // n_probes
    z = points.repeat_interleave(repeats, dim=0)
    probes = torch.randn(probe_shape(N_STEPS, n_probes, len(z), 2, multistep),
                         generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x, log_q = perturbation_sample(model, SCHEDULE, z, probes, N_STEPS, multistep)
    s = standard_normal_log_prob(z) - log_q
    x_exact, log_det = integrate_probability_flow(model, SCHEDULE, points, 1.0, SCHEDULE.t_min, N_STEPS,
                                                  exact_divergence)
    torch.testing.assert_close(x.reshape(3, repeats, 2)[:, 0], x_exact)
    ratio = torch.exp(s.reshape(3, repeats) - log_det[:, None])
    error = ratio.std(dim=1) / math.sqrt(repeats)
    assert torch.all((ratio.mean(dim=1) - 1.0).abs() < 4 * error + 2e-3), (ratio.mean(dim=1), error)
    # The map is far from volume-preserving and its Jacobian differs from point to point: the check has teeth.
    assert float(log_det.abs().min()) > 0.2 and float(log_det.max() - log_det.min()) > 0.1
