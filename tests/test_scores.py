"""Score models (scores.py) and probability-flow sampling (probability_flow.py), against analytic truths."""

from functools import partial

import pytest
import torch
from torch import nn

from boltzflow.probability_flow import (
    exact_divergence,
    hutchinson_divergence,
    probability_flow_log_prob,
    sample_probability_flow,
)
from boltzflow.scores import (
    ConservativeScore,
    UnconstrainedScore,
    VPSchedule,
    denoising_score_matching_loss,
    train_score_model,
)
from resume_helpers import train_killed_and_resumed

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COVARIANCE = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)


class AnalyticGaussianScore(nn.Module):
    """Exact score of x0 ~ N(mean, covariance) diffused by a VP schedule: N(α mean, α² Σ + σ² I)."""

    def __init__(self, mean, covariance, schedule):
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("covariance", covariance.clone())
        self.schedule = schedule
        self.dim = mean.shape[0]

    def forward(self, x, t):
        alpha = self.schedule.alpha(t)[:, None, None]
        eye = torch.eye(self.dim, dtype=x.dtype)
        covariance_t = alpha**2 * self.covariance + self.schedule.sigma_squared(t)[:, None, None] * eye
        return -torch.linalg.solve(covariance_t, (x - alpha[:, :, 0] * self.mean)[:, :, None])[:, :, 0]


# β_max = 40 makes α(1) ≈ 4e-5, so that the prior N(0, I) is p_1 to well below the 1e-3 tolerance
# on log q; t_min = 1e-5 makes p_{t_min} the data distribution to the same precision.
SHARP_SCHEDULE = VPSchedule(beta_min=0.1, beta_max=40.0, t_min=1e-5)


def test_vp_schedule_variance_solves_the_forward_sde_moment_equation():
    # For x0 = 0 the forward SDE gives d Var/dt = 2 (-½ β) Var + g² = β (1 - Var), Var(0) = 0.
    schedule = VPSchedule()
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    h = 1e-6
    d_variance = (schedule.sigma_squared(t + h) - schedule.sigma_squared(t - h)) / (2 * h)
    expected = schedule.diffusion(t) ** 2 * (1 - schedule.sigma_squared(t))
    torch.testing.assert_close(d_variance, expected, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(schedule.alpha(t) ** 2 + schedule.sigma_squared(t), torch.ones_like(t))
    x = torch.randn(7, 2, dtype=torch.float64)
    torch.testing.assert_close(schedule.drift(x, t), -0.5 * schedule.beta(t)[:, None] * x)


def test_probability_flow_with_exact_gaussian_score_recovers_data_density():
    model = AnalyticGaussianScore(MEAN, COVARIANCE, SHARP_SCHEDULE)
    generator = torch.Generator().manual_seed(0)
    x, log_q = sample_probability_flow(model, SHARP_SCHEDULE, 2000, n_steps=200, generator=generator)

    data_density = torch.distributions.MultivariateNormal(MEAN, COVARIANCE)
    assert (log_q - data_density.log_prob(x)).abs().max() < 1e-3
    torch.testing.assert_close(x.mean(dim=0), MEAN, atol=0.1, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), COVARIANCE, atol=0.15, rtol=0)

    # The density direction (data -> noise) gives the same log q at the same points.
    log_q_back = probability_flow_log_prob(model, SHARP_SCHEDULE, x[:200], n_steps=200)
    assert (log_q_back - data_density.log_prob(x[:200])).abs().max() < 1e-3


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_hutchinson_log_q_is_unbiased_but_noisy(distribution):
    model = AnalyticGaussianScore(MEAN, COVARIANCE, SHARP_SCHEDULE)
    n = 1000
    _, exact = sample_probability_flow(model, SHARP_SCHEDULE, n, n_steps=40, generator=torch.Generator().manual_seed(1))
    hutchinson = partial(
        hutchinson_divergence, n_probes=1, generator=torch.Generator().manual_seed(2), distribution=distribution
    )
    # Same x(1) stream, and the path does not depend on the probes: the difference is probe noise alone.
    _, estimate = sample_probability_flow(
        model, SHARP_SCHEDULE, n, n_steps=40, divergence=hutchinson, generator=torch.Generator().manual_seed(1)
    )
    difference = estimate - exact
    standard_error = difference.std() / n**0.5
    assert difference.std() > 1e-2
    assert difference.mean().abs() < 4 * standard_error


def test_exact_divergence_is_the_trace_of_the_autograd_jacobian():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3)).double()

    def velocity(x, t):
        return network(torch.cat([x, t[:, None]], dim=-1))

    x = torch.randn(5, 3, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64)
    value, divergence = exact_divergence(velocity, x, t)
    traces = torch.stack([
        torch.trace(torch.autograd.functional.jacobian(lambda xi, i=i: velocity(xi[None], t[i : i + 1])[0], x[i]))
        for i in range(5)
    ])
    torch.testing.assert_close(divergence, traces)
    torch.testing.assert_close(value, velocity(x, t).detach())


def _randomize_output_layer(model, seed):
    # The output layer starts at zero (the model is then the reference Gaussian); tests want a generic one.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.network[-1].parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))


def test_conservative_score_is_minus_the_energy_gradient():
    model = ConservativeScore(3, hidden=16, n_hidden_layers=2, loc=[0.5, -1.0, 2.0], scale=[1.0, 2.0, 0.5]).double()
    _randomize_output_layer(model, 0)
    x = torch.randn(4, 3, dtype=torch.float64)
    t = torch.rand(4, dtype=torch.float64)
    with torch.no_grad():
        score = model(x, t)
        h = 1e-6
        for i in (0, 2):
            step = torch.zeros(3, dtype=torch.float64)
            step[i] = h
            finite_difference = (model.energy(x + step, t) - model.energy(x - step, t)) / (2 * h)
            torch.testing.assert_close(score[:, i], -finite_difference, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("model_class", [UnconstrainedScore, ConservativeScore])
def test_dsm_training_learns_the_analytic_gaussian_score(model_class):
    torch.manual_seed(0)
    data = torch.distributions.MultivariateNormal(MEAN, COVARIANCE).sample((4000,)).float()
    schedule = VPSchedule()
    model = model_class(2, hidden=64, n_hidden_layers=2, loc=data.mean(dim=0), scale=data.std(dim=0))

    evaluation_batch = data[:2000]
    analytic = AnalyticGaussianScore(MEAN.float(), COVARIANCE.float(), schedule)
    t_small = torch.full((1000,), 0.05)
    noise = torch.randn(1000, 2, generator=torch.Generator().manual_seed(5))
    x_t = schedule.alpha(t_small)[:, None] * data[:1000] + schedule.sigma(t_small)[:, None] * noise

    def evaluate():
        loss = denoising_score_matching_loss(model, evaluation_batch, schedule, torch.Generator().manual_seed(3))
        exact = analytic(x_t, t_small)
        error = (model(x_t, t_small) - exact).pow(2).sum(dim=-1).mean() / exact.pow(2).sum(dim=-1).mean()
        return loss.item(), error.item()

    loss_before, error_before = evaluate()
    records = train_score_model(
        model, data, schedule, steps=1000, batch_size=256, learning_rate=3e-3, seed=0, log=lambda _: None, log_every=250
    )
    loss_after, error_after = evaluate()

    assert list(records["step"]) == [250, 500, 750, 1000]
    assert records["learning_rate"][0] > records["learning_rate"][-1]
    assert loss_after < loss_before
    # Loose: a short training on a CPU; the untrained model (the diagonal reference Gaussian) misses
    # the correlation entirely.
    assert error_after < 0.2
    assert error_after < 0.2 * error_before


@pytest.mark.parametrize("model_class", [UnconstrainedScore, ConservativeScore])
def test_score_model_round_trips_through_weights_only_save(model_class, tmp_path):
    model = model_class(2, hidden=8, n_hidden_layers=1, time_frequencies=3, loc=[1.0, 2.0], scale=[0.5, 3.0],
                        beta_max=15.0)
    _randomize_output_layer(model, 1)
    assert all(isinstance(value, (int, float)) for value in model.config.values())
    path = tmp_path / "score.pt"
    torch.save({"config": model.config, "state_dict": model.state_dict()}, path)

    saved = torch.load(path, weights_only=True)
    rebuilt = model_class(**saved["config"])
    rebuilt.load_state_dict(saved["state_dict"])
    x, t = torch.randn(6, 2), torch.rand(6)
    torch.testing.assert_close(rebuilt(x, t), model(x, t))
    assert rebuilt.schedule == model.schedule


@pytest.mark.parametrize("model_class", [UnconstrainedScore, ConservativeScore])
def test_interrupted_score_training_resumes_bit_for_bit(model_class, tmp_path):
    data = torch.randn(300, 2, generator=torch.Generator().manual_seed(11))
    schedule = VPSchedule()
    settings = dict(steps=40, batch_size=32, learning_rate=3e-3, seed=3, log_every=5)

    def fresh():
        torch.manual_seed(99)
        model = model_class(2, hidden=8, n_hidden_layers=1, time_frequencies=2)
        _randomize_output_layer(model, 2)  # so that every layer trains from the first step
        return model

    checkpoint = tmp_path / "score.checkpoint"
    reference, expected, resumed, records, messages = train_killed_and_resumed(
        lambda model, **kw: train_score_model(model, data, schedule, **kw, **settings), fresh, checkpoint)
    assert any("resuming from checkpoint at step 20/40" in m for m in messages), messages
    assert not checkpoint.exists()
    assert list(records) == ["step", "loss", "learning_rate"]
    for key in expected:
        assert records[key].dtype == expected[key].dtype
        assert (records[key] == expected[key]).all(), key
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
