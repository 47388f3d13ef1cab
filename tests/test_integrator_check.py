"""Step doubling measures the RK4 error of probability-flow likelihoods: analytic Gaussian flows, identities."""

import math

import numpy as np
import pytest
import torch
from test_scores import AnalyticGaussianScore

from boltzflow import estimators
from boltzflow.cvs import State
from boltzflow.generators import CartesianMap, ScoreGenerator
from boltzflow.integrator_check import integrator_error, step_doubling_weights
from boltzflow.probability_flow import exact_divergence, integrate_probability_flow, standard_normal_log_prob
from boltzflow.scores import UnconstrainedScore, VPSchedule
from boltzflow.settings import ScoreSamplingSettings
from boltzflow.stages.score import sample_score_stage
from boltzflow.systems import system_from_config

# These checks are in float64 (the fixture restores the default dtype for the other modules).
pytestmark = pytest.mark.usefixtures("float64_default")

SCHEDULE = VPSchedule(beta_min=0.1, beta_max=20.0, t_min=1e-3)  # the config's defaults
ANGLE = 0.5
ROTATION = torch.tensor([[math.cos(ANGLE), -math.sin(ANGLE)], [math.sin(ANGLE), math.cos(ANGLE)]], dtype=torch.float64)
MEAN = torch.tensor([0.2, -0.1], dtype=torch.float64)
STATES = (State("low", ({"x": (-10.0, 0.2)},)), State("high", ({"x": (0.2, 10.0)},)))


def cvs(x):
    x = np.asarray(x)
    return {"x": x[:, 0], "y": x[:, 1]}


class GaussianFlow:
    """Data N(MEAN, R diag(λ) Rᵀ) with its exact score: the probability-flow ODE is linear, and its exact
    solution is known. With y = x - α(t) MEAN in the eigenbasis, dy_i/dt = ½ β α² (1 - λ_i) / s_i² y_i and
    d ln s_i/dt is the same, for s_i(t)² = α(t)² λ_i + σ(t)², so y_i(t) ∝ s_i(t): the map from t = 1 to
    t_min scales each eigen-direction by s_i(t_min) / s_i(1), and the continuous ODE's
    log q(x) = log N(z) - Σ ln(s_i(t_min) / s_i(1))."""

    def __init__(self, variances, target_scale=1.0, target_shift=0.0):
        self.eigenvalues = torch.tensor(variances, dtype=torch.float64)
        self.covariance = ROTATION @ torch.diag(self.eigenvalues) @ ROTATION.T
        self.model = AnalyticGaussianScore(MEAN, self.covariance, SCHEDULE)
        self.target_precision = torch.linalg.inv(target_scale * self.covariance)
        self.target_mean = MEAN + target_shift

    def reduced_energy(self, x):
        d = x - self.target_mean
        return 0.5 * torch.einsum("bi,ij,bj->b", d, self.target_precision, d)

    def decode(self, z, steps):
        """RK4 with the exact divergence, as the score samplers integrate."""
        x, integral = integrate_probability_flow(self.model, SCHEDULE, z, 1.0, SCHEDULE.t_min, steps, exact_divergence)
        return x, standard_normal_log_prob(z) - integral

    def exact(self, z):
        """(x, log w) of the continuous ODE, in closed form."""
        def spread(t):
            t = torch.tensor([t], dtype=torch.float64)
            return torch.sqrt(SCHEDULE.alpha(t) ** 2 * self.eigenvalues + SCHEDULE.sigma_squared(t))

        ratio = spread(SCHEDULE.t_min) / spread(1.0)
        alpha_1, alpha_min = (float(SCHEDULE.alpha(torch.tensor([t]))) for t in (1.0, SCHEDULE.t_min))
        x = alpha_min * MEAN + ((z - alpha_1 * MEAN) @ ROTATION) * ratio @ ROTATION.T
        log_q = standard_normal_log_prob(z) - torch.log(ratio).sum()
        return x, (-self.reduced_energy(x) - log_q).numpy()

    def log_w(self, z, steps):
        x, log_q = self.decode(z, steps)
        return x, (-self.reduced_energy(x) - log_q).numpy()


def latents(n, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_gaussian_flow_closed_form_is_the_limit_of_rk4():
    flow, z = GaussianFlow([0.01, 1.0]), latents(200)
    x_exact, log_w_exact = flow.exact(z)
    x, log_w = flow.log_w(z, 400)
    assert float((x - x_exact).abs().max()) < 1e-7
    assert np.abs(log_w - log_w_exact).max() < 1e-6


def test_step_doubling_shrinks_sixteenfold_and_matches_the_true_rk4_error():
    # Per sample, δ_n = log w_n - log w_2n = e_n - e_2n ≈ (15/16) e_n for the true error e_n of RK4 (order 4).
    flow, z = GaussianFlow([0.1, 1.0]), latents(2000)
    _, log_w_exact = flow.exact(z)
    _, log_w_80, _, log_w_160 = step_doubling_weights(flow.decode, flow.reduced_energy, z, 80, 1000)
    _, log_w_320 = flow.log_w(z, 320)
    delta_80, delta_160 = log_w_80 - log_w_160, log_w_160 - log_w_320
    error_80 = log_w_80 - log_w_exact

    def rms(a):
        return float(np.sqrt(np.mean(a**2)))

    assert 12 < rms(delta_80) / rms(delta_160) < 21, (rms(delta_80), rms(delta_160))
    assert rms(delta_80 - 15 / 16 * error_80) < 0.1 * rms(error_80)
    assert rms(error_80) > 1e-7  # well above float64 round-off: the check measures something


def test_sharp_component_bias_at_20_steps_is_measured_with_its_sign():
    # The case: a component of variance 0.001 in standardized units, 20 steps: about -0.09 nats per
    # sample, of one sign. The target is the data distribution, so the weights are near uniform and the
    # ln Z error is resolved to a few thousandths.
    flow, z = GaussianFlow([0.001, 1.0]), latents(4000)
    x_exact, log_w_exact = flow.exact(z)
    x_n, log_w_n, x_2n, log_w_2n = step_doubling_weights(flow.decode, flow.reduced_energy, z, 20, 1000)
    check = integrator_error(log_w_n, log_w_2n, cvs(x_n), cvs(x_2n), STATES, 20)
    true_per_sample = float(np.mean(log_w_n - log_w_exact))
    assert -0.2 < true_per_sample < -0.05
    assert check.mean_log_w_shift == pytest.approx(15 / 16 * true_per_sample, rel=0.15)
    true_log_z = estimators.log_partition_function(log_w_n) - estimators.log_partition_function(log_w_exact)
    assert true_log_z < -0.05
    assert abs(check.log_z_error - true_log_z) < 0.15 * abs(true_log_z) + 2 * check.log_z_error_err
    assert check.log_z_error_err < 0.01
    # ΔF: a tilted, broader target, so that the error differs between the states.
    flow = GaussianFlow([0.001, 1.0], target_scale=1.2, target_shift=0.02)
    x_exact, log_w_exact = flow.exact(z)
    x_n, log_w_n, x_2n, log_w_2n = step_doubling_weights(flow.decode, flow.reduced_energy, z, 20, 1000)
    check = integrator_error(log_w_n, log_w_2n, cvs(x_n), cvs(x_2n), STATES, 20)
    true_delta_f = (estimators.state_delta_f(log_w_n, cvs(x_n), STATES)
                    - estimators.state_delta_f(log_w_exact, cvs(x_exact), STATES))
    assert check.delta_f_error[0] == 0.0 and true_delta_f[0] == 0.0
    assert abs(check.delta_f_error[1] - true_delta_f[1]) < 2 * check.delta_f_error_err[1] + 0.01


def test_integrator_error_is_the_richardson_scaled_shift_of_the_estimates():
    # Identities: a constant shift of every log-weight moves ln Z only; a shift c of one state's
    # log-weights moves its ΔF by -c (ΔF = -ln P_s/P_ref), both scaled by 16/15.
    rng = np.random.default_rng(0)
    x = rng.normal(0.2, 1.0, size=(500, 2))
    log_w = rng.normal(0.0, 0.5, size=500)
    high = x[:, 0] >= 0.2
    check = integrator_error(log_w + 0.3, log_w, cvs(x), cvs(x), STATES, 10)
    np.testing.assert_allclose(check.delta_f_error, [0.0, 0.0], atol=1e-12)
    assert check.log_z_error == pytest.approx(16 / 15 * 0.3)
    assert check.mean_log_w_shift == pytest.approx(0.3)
    check = integrator_error(log_w + 0.3 * high, log_w, cvs(x), cvs(x), STATES, 10)
    assert check.delta_f_error[1] == pytest.approx(-16 / 15 * 0.3)
    assert check.delta_f_error_err[1] > 0
    # A state the subsample never visits has no error estimate (NaN), not 0.
    check = integrator_error(log_w, log_w, cvs(x * 0 - 1), cvs(x * 0 - 1), STATES, 10)
    assert np.isnan(check.delta_f_error[1])


@pytest.mark.parametrize("check_samples", [0, 64])
def test_score_samples_file_carries_the_integrator_check(check_samples):
    system = system_from_config("well", {"type": "toy2d", "energy": "(x^2 - 1)^2 + y^2", "temperatures": [300],
                                         "states": {"left": {"x": [-3, 0]}, "right": {"x": [0, 3]}}})
    torch.manual_seed(0)
    network = UnconstrainedScore(dim=2, hidden=16, n_hidden_layers=1)
    model = ScoreGenerator(network, torch.zeros(2), torch.ones(2), CartesianMap(2))
    settings = ScoreSamplingSettings(n_samples=32, ode_steps=4, batch_size=32, integrator_check_samples=check_samples)
    messages = []
    dataset = sample_score_stage(system, model, settings, "exact", log=messages.append)
    assert list(dataset["state"].values) == ["left", "right"]
    error = dataset["integrator_error"]
    assert error.dims == ("state",) and error.attrs["units"] == "kT" and "long_name" in error.attrs
    assert dataset.attrs["integrator_check_samples"] == check_samples
    if check_samples:
        assert error.values[0] == 0.0 and np.isfinite(error.values[1])
        assert np.isfinite(dataset.attrs["integrator_error_log_z"])
        assert any("integrator check on 64 latents" in message for message in messages)
    else:
        assert np.isnan(error.values).all() and np.isnan(dataset.attrs["integrator_error_log_z"])
