"""Tests of the spline coupling flow (boltzflow.flows) and its training (boltzflow.training).

Small models and few steps keep the file fast on a couple of CPU cores; the tolerances are chosen
so that a broken transform, log-determinant or training loop fails them by a wide margin.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from boltzflow.flows import SplineCouplingFlow, rational_quadratic_spline
from boltzflow.training import BufferSettings, _FlowObjective, train_flow
from resume_helpers import train_killed_and_resumed

torch.set_num_threads(1)


def _perturb(flow: SplineCouplingFlow, std: float = 0.5, seed: int = 0) -> SplineCouplingFlow:
    """Give every conditioner's (zero-initialized) output layer random weights, so the flow is far
    from the identity and the tests below actually exercise the splines."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in flow.layers:
            last = layer.conditioner[-1]
            for p in (last.weight, last.bias):
                p.copy_(std * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return flow


def _flow(dim, seed=0, std=0.5, **kwargs):
    torch.manual_seed(seed)
    kwargs.setdefault("n_layers", 4)
    kwargs.setdefault("hidden", 16)
    loc = torch.linspace(-0.5, 0.5, dim)
    scale = torch.linspace(0.7, 1.4, dim)
    return _perturb(SplineCouplingFlow(dim, loc=loc, scale=scale, **kwargs), std=std, seed=seed).double()


def _silent(_message):
    pass


# --------------------------------------------------------------------------------------- transform


@pytest.mark.parametrize("dim", [2, 5])
def test_forward_inverse_roundtrip(dim):
    flow = _flow(dim, tail_bound=2.0)
    generator = torch.Generator().manual_seed(1)
    # Spread 3x wider than the spline interval, so both the splines and the identity tails are hit.
    x = 3.0 * torch.randn(2000, dim, generator=generator, dtype=torch.float64)
    z, log_det_inv = flow.inverse(x)
    x_back, log_det_fwd = flow.forward(z)
    assert (x_back - x).abs().max() < 1e-4
    assert (log_det_fwd + log_det_inv).abs().max() < 1e-4
    z_back, _ = flow.inverse(flow.forward(x)[0])
    assert (z_back - x).abs().max() < 1e-4
    # The perturbation must matter, or this test would be vacuous.
    assert (z - (x - flow.loc) / flow.scale).abs().max() > 0.1


def test_roundtrip_after_training_steps():
    flow = SplineCouplingFlow(3, n_layers=4, hidden=16).double()
    generator = torch.Generator().manual_seed(2)
    data = torch.randn(500, 3, generator=generator, dtype=torch.float64) ** 3  # skewed, heavy tails
    train_flow(flow, data, steps=20, batch_size=64, learning_rate=1e-2, log=_silent, log_every=10)
    x = data[:300]
    z, log_det_inv = flow.inverse(x)
    x_back, log_det_fwd = flow.forward(z)
    assert (x_back - x).abs().max() < 1e-4
    assert (log_det_fwd + log_det_inv).abs().max() < 1e-4
    assert (z - x).abs().max() > 1e-2  # training moved the flow away from the identity


def test_identity_at_initialization():
    loc, scale = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 0.5, 1.0])
    flow = SplineCouplingFlow(3, loc=loc, scale=scale)
    z = torch.randn(100, 3)
    x, log_det = flow.forward(z)
    torch.testing.assert_close(x, loc + scale * z)
    torch.testing.assert_close(log_det, torch.log(scale).sum().expand(100))
    # Then q = N(loc, diag(scale²)).
    expected = torch.distributions.Normal(loc, scale).log_prob(x).sum(-1)
    torch.testing.assert_close(flow.log_prob(x), expected)


def _autograd_log_det(function, points):
    out = []
    for point in points:
        jac = torch.autograd.functional.jacobian(lambda v: function(v[None])[0][0], point)
        out.append(torch.linalg.slogdet(jac).logabsdet)
    return torch.stack(out)


@pytest.mark.parametrize("dim", [2, 5])
def test_log_det_matches_autograd_jacobian(dim):
    tail_bound = 1.5
    flow = _flow(dim, seed=3, tail_bound=tail_bound)
    generator = torch.Generator().manual_seed(4)
    z = 1.5 * torch.randn(16, dim, generator=generator, dtype=torch.float64)
    z[0, 0] = 2.5 * tail_bound  # certainly in a tail
    z[1, -1] = -3.0 * tail_bound
    x, log_det_fwd = flow.forward(z)
    standardized = (x - flow.loc) / flow.scale
    assert (standardized.abs() > tail_bound).any() and (z.abs() > tail_bound).any()
    assert (standardized.abs() < tail_bound).any()
    torch.testing.assert_close(log_det_fwd, _autograd_log_det(flow.forward, z), atol=1e-8, rtol=1e-6)
    _, log_det_inv = flow.inverse(x)
    torch.testing.assert_close(log_det_inv, _autograd_log_det(flow.inverse, x), atol=1e-8, rtol=1e-6)


def test_log_prob_integrates_to_one():
    # A moderate perturbation: large random weights make spikes of density that a grid of this
    # spacing cannot resolve (the quadrature, not the flow, is then what is off).
    flow = _flow(2, seed=5, std=0.3, tail_bound=3.0)
    # The splines act on [-3, 3] in standardized coordinates and are the identity (on base-normal
    # tails) outside, so nearly all mass lies within a few scales of loc: [-9, 9]² is ample.
    h = 0.04
    grid = torch.arange(-9.0, 9.0 + h / 2, h, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)
    with torch.no_grad():
        log_q = torch.cat([flow.log_prob(chunk) for chunk in points.split(65536)])
    total = log_q.exp().sum().item() * h * h
    assert abs(total - 1.0) < 1e-2
    # And the density is far from the initial Gaussian (the perturbation matters).
    gaussian = torch.distributions.Normal(flow.loc, flow.scale).log_prob(points).sum(-1)
    assert (log_q - gaussian).abs().max() > 0.5


def test_tail_boundary_inputs():
    bound = 2.0
    gen = torch.Generator().manual_seed(6)
    for dtype in (torch.float32, torch.float64):
        inputs = torch.tensor([-bound, bound, -bound, bound, 0.0, 1.999999], dtype=dtype)
        params = [torch.randn(6, k, generator=gen).to(dtype) for k in (8, 8, 7)]
        for inverse in (False, True):
            out, lad = rational_quadratic_spline(inputs, *params, inverse=inverse, tail_bound=bound)
            assert torch.isfinite(out).all() and torch.isfinite(lad).all()
            assert out[0] == -bound and out[1] == bound  # boundary knots are fixed points
        y, lad_f = rational_quadratic_spline(inputs, *params, tail_bound=bound)
        back, lad_i = rational_quadratic_spline(y, *params, inverse=True, tail_bound=bound)
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        assert (back - inputs).abs().max() < tol and (lad_f + lad_i).abs().max() < tol


def test_float32_default_and_sampling_reproducible():
    flow = _perturb(SplineCouplingFlow(2, n_layers=4, hidden=16, tail_bound=3.0))
    assert flow.loc.dtype == torch.float32
    x1, log_q1 = flow.sample(500, generator=torch.Generator().manual_seed(7))
    x2, log_q2 = flow.sample(500, generator=torch.Generator().manual_seed(7))
    assert x1.dtype == torch.float32 and log_q1.shape == (500,)
    assert torch.equal(x1, x2) and torch.equal(log_q1, log_q2)
    # log q returned by sample agrees with log_prob at the sample.
    assert (flow.log_prob(x1) - log_q1).abs().max() < 1e-3
    assert not log_q1.requires_grad


def test_save_and_rebuild(tmp_path):
    flow = _perturb(SplineCouplingFlow(5, n_layers=3, hidden=8, n_bins=6, tail_bound=4.0, loc=torch.ones(5),
                                       scale=2 * torch.ones(5)))
    path = tmp_path / "flow.pt"
    torch.save(flow.state_dict(), path)
    rebuilt = SplineCouplingFlow(**flow.config)
    rebuilt.load_state_dict(torch.load(path, weights_only=True))
    assert all(isinstance(v, (int, float)) for v in flow.config.values())
    x = torch.randn(50, 5)
    torch.testing.assert_close(rebuilt.log_prob(x), flow.log_prob(x))
    torch.testing.assert_close(rebuilt.loc, flow.loc)


# ---------------------------------------------------------------------------------------- training


_MEANS = torch.tensor([[-1.5, -0.5], [1.5, 0.5]], dtype=torch.float64)
_COV = torch.tensor([[0.5, 0.3], [0.3, 0.4]], dtype=torch.float64)


def _mixture_sample(n, generator):
    k = torch.randint(2, (n,), generator=generator)
    chol = torch.linalg.cholesky(_COV)
    return _MEANS[k] + torch.randn(n, 2, generator=generator, dtype=torch.float64) @ chol.T


def _mixture_log_density(x):
    components = [torch.distributions.MultivariateNormal(m, _COV).log_prob(x) for m in _MEANS]
    return torch.logsumexp(torch.stack(components), dim=0) - math.log(2.0)


def test_training_recovers_gaussian_mixture():
    generator = torch.Generator().manual_seed(10)
    data = _mixture_sample(4000, generator)
    test = _mixture_sample(4000, generator)
    flow = SplineCouplingFlow(2, n_layers=4, hidden=16, loc=data.mean(0), scale=data.std(0))
    log_p = _mixture_log_density(test)

    def forward_kl():  # KL(p || q) estimated on held-out samples of p, nats
        with torch.no_grad():
            return (log_p - flow.log_prob(test.float()).double()).mean().item()

    kl_before = forward_kl()
    messages = []
    curves = train_flow(flow, data.float(), steps=200, batch_size=256, learning_rate=1e-2, log=messages.append,
                        log_every=50)
    kl_after = forward_kl()

    assert kl_before > 0.5  # a Gaussian fit of a bimodal mixture: far off
    assert abs(kl_after) < 0.06  # the flow is close (sampling error of the estimate ~0.003)
    with torch.no_grad():
        error = log_p - flow.log_prob(test.float()).double()
    assert (error - error.mean()).abs().mean() < 0.25
    # Curves: recorded every log_every steps and at the end; NLL close to the entropy of p.
    np.testing.assert_array_equal(curves["step"], [50, 100, 150, 200])
    assert curves["step"].dtype.kind == "i"
    entropy = -log_p.mean().item()
    assert abs(curves["validation_nll"][-1] - entropy) < 0.15
    assert curves["train_nll"][-1] < curves["train_nll"][0] + 0.05
    assert np.isnan(curves["reverse_kl"]).all()
    assert curves["learning_rate"][0] > curves["learning_rate"][-1] >= 0
    assert len(messages) == 4 and "200/200" in messages[-1] and "ETA" in messages[-1]
    assert not flow.training


def _gaussian_energy():
    mean = torch.tensor([1.0, -0.5], dtype=torch.float64)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64)
    precision = torch.linalg.inv(cov)
    log_z = math.log(2 * math.pi) + 0.5 * torch.logdet(cov).item()

    def reduced_energy(x):
        d = x - mean
        return 0.5 * ((d @ precision) * d).sum(-1)

    return mean, cov, reduced_energy, log_z


def test_seeded_training_is_reproducible():
    _, _, energy, _ = _gaussian_energy()
    data = torch.randn(300, 2, generator=torch.Generator().manual_seed(11))

    def run(seed):
        torch.manual_seed(1234 + seed)  # the model's initial weights are fixed before training
        flow = SplineCouplingFlow(2, n_layers=2, hidden=8)
        curves = train_flow(
            flow, data, reduced_energy=energy, energy_weight=0.5, steps=12, batch_size=32,
            energy_batch_size=32, seed=seed, log=_silent, log_every=5,
        )
        return flow, curves

    (flow_a, curves_a), (flow_b, curves_b), (_, curves_c) = run(0), run(0), run(1)
    assert curves_a.keys() == curves_b.keys()
    for key in curves_a:
        np.testing.assert_array_equal(curves_a[key], curves_b[key])
    for (name, a), b in zip(flow_a.state_dict().items(), flow_b.state_dict().values()):
        assert torch.equal(a, b), name
    assert not np.array_equal(curves_a["train_nll"], curves_c["train_nll"])


def test_energy_term_reduces_reverse_kl():
    mean, cov, energy, log_z = _gaussian_energy()
    # Maximum likelihood alone would fit these samples of a too-broad Gaussian (KL(q||p) ~ 0.44);
    # only the energy term can pull q onto p.
    generator = torch.Generator().manual_seed(12)
    chol = torch.linalg.cholesky(cov)
    data = (mean + 1.5 * torch.randn(400, 2, generator=generator, dtype=torch.float64) @ chol.T).float()
    torch.manual_seed(0)
    flow = SplineCouplingFlow(2, n_layers=4, hidden=16, loc=data.mean(0), scale=data.std(0))

    def reverse_kl():  # KL(q || p) = E_q[u + log q] + log Z, nats
        x, log_q = flow.sample(20000, generator=torch.Generator().manual_seed(13))
        return (energy(x.double()) + log_q.double()).mean().item() + log_z

    kl_before = reverse_kl()
    curves = train_flow(
        flow, data, reduced_energy=energy, energy_weight=10.0, steps=100, batch_size=128,
        energy_batch_size=128, learning_rate=1e-2, log=_silent, log_every=25,
    )
    kl_after = reverse_kl()
    assert kl_before > 1.0
    assert kl_after < 0.1
    # The recorded term is E_q[u + log q] = KL - log Z, and it decreases.
    assert curves["reverse_kl"][-1] < curves["reverse_kl"][0]
    assert abs(curves["reverse_kl"][-1] + log_z - kl_after) < 0.1
    assert (curves["nonfinite_energy"] == 0).all()


def test_nonfinite_energies_are_dropped():
    # u = |x|²/2 / [x0 < 3]: +inf for x0 > 3, and its backward there is inf * 0 = NaN, so merely
    # masking the energies after evaluating them would still poison the gradient.
    def energy(x):
        return 0.5 * (x**2).sum(-1) / (x[:, 0] < 3.0).to(x.dtype)

    data = torch.randn(300, 2, generator=torch.Generator().manual_seed(14))
    torch.manual_seed(0)
    # scale 2: about 7% of the flow's samples have x0 > 3.
    flow = SplineCouplingFlow(2, n_layers=2, hidden=8, scale=torch.tensor([2.0, 2.0]))
    curves = train_flow(
        flow, data, reduced_energy=energy, energy_weight=1.0, steps=10, batch_size=64,
        energy_batch_size=128, log=_silent, log_every=5,
    )
    assert curves["nonfinite_energy"].sum() > 0
    assert (curves["skipped_steps"] == 0).all()
    assert np.isfinite(curves["reverse_kl"]).all() and np.isfinite(curves["train_nll"]).all()
    assert all(torch.isfinite(p).all() for p in flow.parameters())
    assert any((p != 0).any() for p in flow.layers[0].conditioner[-1].parameters())  # steps were taken


@pytest.mark.parametrize("term", ["reverse_kl", "replay_buffer"])
def test_interrupted_training_resumes_bit_for_bit(tmp_path, term):
    _, _, energy, _ = _gaussian_energy()
    data = torch.randn(300, 2, generator=torch.Generator().manual_seed(11))
    settings = dict(reduced_energy=energy, energy_weight=0.5, steps=40, batch_size=32, energy_batch_size=32,
                    seed=3, log_every=5)
    if term == "replay_buffer":  # the buffer's samples and weights travel in the checkpoint
        settings.update(energy_weight=0.0, buffer=BufferSettings(weight=1.0, samples=64, refresh_every=7, size=200))

    def fresh():
        torch.manual_seed(99)
        return SplineCouplingFlow(2, n_layers=2, hidden=8)

    checkpoint = tmp_path / "flow.checkpoint"
    reference, expected, resumed, curves, messages = train_killed_and_resumed(
        lambda model, **kw: train_flow(model, data, **kw, **settings), fresh, checkpoint)
    assert any("resuming from checkpoint at step 20/40" in m for m in messages), messages
    assert not checkpoint.exists()
    for key in expected:
        np.testing.assert_array_equal(curves[key], expected[key])
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert np.isfinite(curves["buffer_nll"]).all() == (term == "replay_buffer")


def test_ess_monitor_follows_training_without_changing_it():
    mean, cov, energy, _ = _gaussian_energy()
    data = torch.distributions.MultivariateNormal(mean, cov).sample((2000,), ).float()

    def run(ess_samples):
        torch.manual_seed(5)
        flow = SplineCouplingFlow(2, n_layers=2, hidden=16)
        curves = train_flow(flow, data, reduced_energy=energy, steps=150, batch_size=256, learning_rate=1e-2,
                            seed=0, log=_silent, log_every=50, ess_samples=ess_samples)
        return flow, curves

    (flow_a, monitored), (flow_b, plain) = run(1000), run(0)
    np.testing.assert_array_equal(monitored["train_nll"], plain["train_nll"])
    for a, b in zip(flow_a.state_dict().values(), flow_b.state_dict().values()):
        assert torch.equal(a, b)
    assert np.isnan(plain["ess_fraction"]).all()
    # A standard normal start is far from the correlated target; the fit brings ESS/N close to 1.
    assert 0 < monitored["ess_fraction"][0] < monitored["ess_fraction"][-1]
    assert monitored["ess_fraction"][-1] > 0.9


def test_early_stopping_keeps_the_weights_of_the_best_validation_record():
    # 60 training points and a flexible flow at a high learning rate: the validation NLL turns up (overfitting).
    generator = torch.Generator().manual_seed(21)
    data = torch.randn(80, 2, generator=generator) * torch.tensor([1.0, 0.3])

    def run(patience):
        torch.manual_seed(4)
        flow = SplineCouplingFlow(2, n_layers=4, hidden=64)
        curves = train_flow(flow, data, steps=600, batch_size=60, learning_rate=2e-2, validation_fraction=0.25,
                            log=_silent, log_every=20, patience=patience)
        return flow, curves

    _, full = run(0)
    nll = full["validation_nll"]
    assert nll[-1] > np.nanmin(nll) + 0.1  # it does overfit
    # Where patience 3 must stop on this run's own curve: the first record 3 records past the best so far
    # (which plateau comes first depends on the CPU, so it is read off the full run, not assumed global).
    best, stop = 0, None
    for record in range(1, len(nll)):
        if nll[record] < nll[best]:
            best = record
        elif record - best >= 3:
            stop = record
            break
    assert stop is not None
    flow, stopped = run(3)
    # Stopped 3 records after the best so far, with the same records up to there, and that record's weights.
    np.testing.assert_array_equal(stopped["step"], full["step"][:stop + 1])
    np.testing.assert_allclose(stopped["validation_nll"], nll[:stop + 1])
    with torch.no_grad():
        validation_nll = -flow.log_prob(data[60:]).mean().item()
    assert validation_nll == pytest.approx(nll[best], abs=1e-5)


def test_early_stopping_needs_a_validation_split():
    with pytest.raises(ValueError, match="validation"):
        train_flow(SplineCouplingFlow(2, n_layers=2, hidden=8), torch.randn(50, 2), steps=5, validation_fraction=0.0,
                   patience=2, log=_silent)


# The best weights travel in the checkpoint.
def test_interrupted_early_stopping_resumes_to_the_best_weights(tmp_path):
    data = torch.randn(80, 2, generator=torch.Generator().manual_seed(21)) * torch.tensor([1.0, 0.3])
    kw = dict(steps=600, batch_size=60, learning_rate=2e-2, validation_fraction=0.25, log_every=20, patience=3)

    def fresh():
        torch.manual_seed(4)
        return SplineCouplingFlow(2, n_layers=4, hidden=64)

    probe = train_flow(fresh(), data, log=lambda _: None, **kw)
    best = int(probe["step"][np.nanargmin(probe["validation_nll"])])
    reference, expected, resumed, curves, messages = train_killed_and_resumed(
        lambda model, **k: train_flow(model, data, **k, **kw), fresh, tmp_path / "c", kill_at=f"step {best + 20}/600")
    assert any("resuming from checkpoint" in m for m in messages)
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


# The buffer keeps the newest samples, each with the weight of the flow that drew it.
def test_the_buffer_keeps_the_newest_samples_with_their_stale_weights():
    torch.manual_seed(0)
    flow = SplineCouplingFlow(2, n_layers=2, hidden=8)
    data = torch.randn(100, 2)
    energy = lambda x: 0.5 * (x.double() ** 2).sum(-1)
    objective = _FlowObjective(flow, data[:90], data[90:], batch_size=8, reduced_energy=None, energy_weight=0.0,
                               energy_batch_size=8, monitor_energy=energy, ess_samples=0, seed=0,
                               buffer=BufferSettings(weight=1.0, samples=64, refresh_every=1, size=100))
    objective._refresh_buffer()
    first_x, first_w = objective.buffer_x.clone(), objective.buffer_log_w.clone()
    with torch.no_grad():
        x0, log_q0 = first_x[:5], flow.log_prob(first_x[:5]).double()
        for p in flow.parameters():
            p.add_(0.1)
    assert torch.allclose(first_w[:5], -energy(x0) - log_q0, atol=1e-5)
    objective._refresh_buffer()
    assert len(objective.buffer_x) == 100
    assert torch.equal(objective.buffer_x[:36], first_x[28:]) and torch.equal(objective.buffer_log_w[:36], first_w[28:])


def test_a_checkpoint_of_other_starting_weights_is_not_resumed(tmp_path):
    # A refinement phase killed after one maximum-likelihood phase must not resume after another (other
    # flow.steps give other starting weights): the checkpoint is keyed on a digest of the starting weights.
    from resume_helpers import Killed

    data = torch.randn(300, 2, generator=torch.Generator().manual_seed(11))
    checkpoint = tmp_path / "flow.checkpoint"

    def die(message):
        if "step 20/40" in message:
            raise Killed

    torch.manual_seed(99)
    with pytest.raises(Killed):
        train_flow(SplineCouplingFlow(2, n_layers=2, hidden=8), data, steps=40, batch_size=32, log_every=5, log=die,
                   checkpoint_path=checkpoint)
    torch.manual_seed(100)  # other starting weights, same settings otherwise
    messages = []
    train_flow(SplineCouplingFlow(2, n_layers=2, hidden=8), data, steps=40, batch_size=32, log_every=5,
               log=messages.append, checkpoint_path=checkpoint)
    assert not any("resuming" in m for m in messages)


def test_a_capped_validation_block_takes_held_out_rows_spread_over_it_and_not_aliased(monkeypatch):
    # The held-out rows alternate between two runs (MD of several runs is interleaved by time). 199 held-out
    # rows capped at 100: the evaluated rows must be held-out rows, the same at every record, one from each of
    # 100 equal stretches of the block, and from both runs (a stride of exactly 2 would read one run only).
    import boltzflow.training as training

    monkeypatch.setattr(training, "MAX_VALIDATION_ROWS", 100)
    seen = []
    monkeypatch.setattr(training, "_validation_nll", lambda model, rows: seen.append(rows.clone()) or 0.0)
    n, n_validation = 1990, 199
    data = torch.randn(n, 2, generator=torch.Generator().manual_seed(3))
    data[:, 1] = torch.arange(n, dtype=data.dtype)  # each row's own index, to find it again
    flow = SplineCouplingFlow(2, n_layers=2, hidden=8, tail_bound=5000.0)
    train_flow(flow, data, steps=4, batch_size=8, validation_fraction=n_validation / n, log=_silent, log_every=2)
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])
    index = seen[0][:, 1].long()
    assert len(index) == 100 and index.min() >= n - n_validation
    position = index - (n - n_validation)
    stretch = torch.arange(101) * n_validation // 100  # stretches of 1 or 2 held-out rows
    assert ((position >= stretch[:-1]) & (position < stretch[1:])).all()
    assert 25 <= int((index % 2).sum()) <= 75
