"""Tests of the circular spline and the mixed real/angle coupling flow (boltzflow.flows).

Truths used: inverse functions, autograd derivatives and Jacobians, quadrature of the density over
R × circle, finite differences across the ±π cut, and the analytic entropy of a von Mises ⊗ Gaussian
density. Small models keep the file fast on a couple of CPU cores.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from boltzflow.flows import MixedSplineCouplingFlow, SplineCouplingFlow, circular_rational_quadratic_spline
from boltzflow.training import train_flow

torch.set_num_threads(1)

TWO_PI = 2.0 * math.pi


def _angular_difference(a, b):
    """a - b as an angle in [-π, π), computed independently of the module's wrapping."""
    return torch.remainder(a - b + math.pi, TWO_PI) - math.pi


def _spline_params(shape, n_bins, generator, dtype=torch.float64, std=1.5):
    return [std * torch.randn(*shape, n_bins, generator=generator, dtype=dtype) for _ in range(3)]


def _perturb(flow, std=0.5, seed=0):
    """Random weights in every conditioner's (zero-initialized) output layer, so the flow is far from
    the identity and the tests exercise the splines."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in flow.layers:
            last = layer.conditioner[-1]
            for p in (last.weight, last.bias):
                p.copy_(std * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return flow


def _mixed_flow(circular, seed=0, std=0.5, double=True, **kwargs):
    dim = len(circular)
    torch.manual_seed(seed)
    kwargs.setdefault("n_layers", 4)
    kwargs.setdefault("hidden", 16)
    loc = torch.linspace(-0.5, 0.5, dim)
    scale = torch.linspace(0.7, 1.4, dim)
    circular_loc = torch.linspace(-3.0, 3.0, dim)  # near the cut for the end coordinates
    flow = MixedSplineCouplingFlow(dim, circular, loc=loc, scale=scale, circular_loc=circular_loc, **kwargs)
    flow = _perturb(flow, std=std, seed=seed)
    return flow.double() if double else flow


def _random_points(circular, n, generator, dtype=torch.float64, angle_range=math.pi):
    """Real coordinates ~ 2 N(0, 1), angles uniform on [-angle_range, angle_range)."""
    real = 2.0 * torch.randn(n, len(circular), generator=generator, dtype=dtype)
    angles = angle_range * (2.0 * torch.rand(n, len(circular), generator=generator, dtype=dtype) - 1.0)
    return torch.where(torch.tensor(circular), angles, real)


def _silent(_message):
    pass


# ------------------------------------------------------------------------------- circular spline


def test_circular_spline_inverse_undoes_forward():
    generator = torch.Generator().manual_seed(0)
    n, n_bins = 3000, 7
    params = _spline_params((n,), n_bins, generator)
    # Three turns wide, so the wrapping of inputs is exercised too.
    x = 3.0 * math.pi * (2.0 * torch.rand(n, generator=generator, dtype=torch.float64) - 1.0)
    y, lad_forward = circular_rational_quadratic_spline(x, *params)
    x_back, lad_inverse = circular_rational_quadratic_spline(y, *params, inverse=True)
    assert _angular_difference(x_back, x).abs().max() < 1e-10
    assert (lad_forward + lad_inverse).abs().max() < 1e-10
    assert _angular_difference(y, x).abs().max() > 0.3  # not the identity


@pytest.mark.parametrize("inverse", [False, True])
def test_circular_spline_logabsdet_is_log_of_autograd_derivative(inverse):
    generator = torch.Generator().manual_seed(1)
    n, n_bins = 500, 6
    params = _spline_params((n,), n_bins, generator)
    x = (TWO_PI * torch.rand(n, generator=generator, dtype=torch.float64) - math.pi).requires_grad_()
    y, lad = circular_rational_quadratic_spline(x, *params, inverse=inverse)
    # Elementwise map: the gradient of the sum is the vector of derivatives.
    (derivative,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(lad, torch.log(derivative), atol=1e-10, rtol=1e-8)


def test_circular_spline_is_smooth_across_the_cut():
    generator = torch.Generator().manual_seed(2)
    n, n_bins, eps = 200, 8, 1e-7
    # Moderate parameters: the O(ε²) terms below scale with the spline's curvature.
    params = _spline_params((n,), n_bins, generator, std=0.7)
    below_cut = torch.full((n,), math.pi - eps, dtype=torch.float64)
    above_cut = torch.full((n,), -math.pi + eps, dtype=torch.float64)
    y_below, lad_below = circular_rational_quadratic_spline(below_cut, *params)
    y_above, lad_above = circular_rational_quadratic_spline(above_cut, *params)
    # Value: both sides approach the fixed point ±π (the same point of the circle).
    # g(±(π - ε)) = ±π ∓ g'(±π) ε + O(ε²).
    assert ((math.pi - y_below) - lad_below.exp() * eps).abs().max() < 1e-11
    assert ((y_above + math.pi) - lad_above.exp() * eps).abs().max() < 1e-11
    # Derivative: equal on both sides, and equal to the slope of the finite difference across the cut.
    assert (lad_below - lad_above).abs().max() < 1e-3
    slope_across = _angular_difference(y_above, y_below) / (2.0 * eps)
    torch.testing.assert_close(torch.log(slope_across), lad_above, atol=1e-3, rtol=0)
    # The slope at the cut is a free parameter (not pinned to 1), so the check above has teeth.
    assert (lad_above.abs() > 0.1).float().mean() > 0.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_circular_spline_maps_circle_onto_circle(dtype):
    generator = torch.Generator().manual_seed(3)
    n_bins = 5
    params = [p[0] for p in _spline_params((1,), n_bins, generator, dtype=dtype)]
    grid = torch.linspace(-math.pi, math.pi, 20001, dtype=torch.float64)[:-1].to(dtype)
    edges = torch.tensor([-math.pi, math.pi, math.pi - 1e-7, -math.pi + 1e-7, 3 * math.pi], dtype=dtype)
    for inverse in (False, True):
        expanded = [p.expand(grid.shape[0], n_bins) for p in params]
        y, lad = circular_rational_quadratic_spline(grid, *expanded, inverse=inverse)
        assert torch.isfinite(lad).all()
        assert (y >= -math.pi).all() and (y < math.pi).all()
        # -π is fixed and the map is increasing (flat only by rounding, in float32, where the slope
        # is near its minimum), with no gap larger than the steepest slope allows: onto [-π, π).
        assert y[0] == grid[0]
        steps = y[1:] - y[:-1]
        assert (steps >= 0).all()
        assert steps.max() <= lad.exp().max() * (grid[1] - grid[0]) * 1.01
        assert math.pi - y[-1] <= lad.exp().max() * (math.pi - grid[-1]) * 1.01
        expanded = [p.expand(edges.shape[0], n_bins) for p in params]
        y_edges, _ = circular_rational_quadratic_spline(edges, *expanded, inverse=inverse)
        assert (y_edges >= -math.pi).all() and (y_edges < math.pi).all()
        assert y_edges[0] == -math.pi and y_edges[1] == -math.pi  # π is -π


def test_circular_spline_with_zero_parameters_is_identity():
    n, n_bins = 1000, 8
    x = torch.linspace(-math.pi, math.pi, n + 1, dtype=torch.float64)[:-1]
    zeros = torch.zeros(n, n_bins, dtype=torch.float64)
    for inverse in (False, True):
        y, lad = circular_rational_quadratic_spline(x, zeros, zeros, zeros, inverse=inverse)
        torch.testing.assert_close(y, x, atol=1e-12, rtol=0)
        torch.testing.assert_close(lad, torch.zeros_like(lad), atol=1e-12, rtol=0)


def test_circular_spline_needs_one_derivative_per_bin():
    widths = torch.zeros(3, 8)
    with pytest.raises(ValueError, match="8 derivatives"):
        circular_rational_quadratic_spline(torch.zeros(3), widths, widths, torch.zeros(3, 7))


# ------------------------------------------------------------------------------------ mixed flow

_CIRCULAR_5 = [True, False, False, True, False]


def test_mixed_flow_starts_as_standardized_gaussian_times_uniform():
    circular = [False, True, False]
    loc, scale = torch.tensor([1.0, 9.0, 0.5]), torch.tensor([2.0, 9.0, 0.5])
    circular_loc = torch.tensor([7.0, 3.0, 7.0])
    flow = MixedSplineCouplingFlow(3, circular, n_layers=2, hidden=8, loc=loc, scale=scale, circular_loc=circular_loc)
    z = flow.sample_base(200, generator=torch.Generator().manual_seed(4))
    x, log_det = flow.forward(z)
    torch.testing.assert_close(x[:, [0, 2]], loc[[0, 2]] + scale[[0, 2]] * z[:, [0, 2]])
    torch.testing.assert_close(_angular_difference(x[:, 1], z[:, 1] + 3.0), torch.zeros(200), atol=1e-5, rtol=0)
    expected = torch.distributions.Normal(loc[[0, 2]], scale[[0, 2]]).log_prob(x[:, [0, 2]]).sum(-1) - math.log(TWO_PI)
    torch.testing.assert_close(flow.log_prob(x), expected)


def test_mixed_flow_base_distribution():
    flow = MixedSplineCouplingFlow(4, [True, False, True, False], n_layers=2, hidden=8).double()
    z = flow.sample_base(40000, generator=torch.Generator().manual_seed(5))
    assert z.shape == (40000, 4) and z.dtype == torch.float64
    angles, real = z[:, [0, 2]], z[:, [1, 3]]
    assert (angles >= -math.pi).all() and (angles < math.pi).all()
    # Uniform on the circle: mean ± 2π/√12 / √n; Fourier moments vanish (± 1/√(2n) ≈ 0.0035).
    assert angles.mean().abs() < 0.03 and (angles.std() - TWO_PI / math.sqrt(12)).abs() < 0.03
    assert torch.cos(angles).mean(0).abs().max() < 0.02 and torch.sin(angles).mean(0).abs().max() < 0.02
    assert real.mean(0).abs().max() < 0.03 and (real.std(0) - 1.0).abs().max() < 0.03
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(real).sum(-1) - 2.0 * math.log(TWO_PI)
    torch.testing.assert_close(flow.base_log_prob(z), expected)


def test_spline_flow_sample_base_is_the_standard_normal_draw():
    # train_flow draws its reverse-KL noise with sample_base: it must be the draw it always was.
    flow = SplineCouplingFlow(3, n_layers=2, hidden=8).double()
    z = flow.sample_base(100, generator=torch.Generator().manual_seed(6))
    expected = torch.randn(100, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert torch.equal(z, expected)


def test_mixed_flow_forward_inverse_roundtrip():
    flow = _mixed_flow(_CIRCULAR_5, seed=1, tail_bound=2.0)
    generator = torch.Generator().manual_seed(7)
    # Real coordinates beyond the spline interval (tails), angles given unwrapped over three turns.
    x = _random_points(_CIRCULAR_5, 2000, generator, angle_range=3.0 * math.pi)
    is_angle = torch.tensor(_CIRCULAR_5)
    z, log_det_inverse = flow.inverse(x)
    x_back, log_det_forward = flow.forward(z)
    assert (z[:, is_angle].abs() <= math.pi).all() and (x_back[:, is_angle].abs() <= math.pi).all()
    assert (x_back[:, ~is_angle] - x[:, ~is_angle]).abs().max() < 1e-8
    assert _angular_difference(x_back[:, is_angle], x[:, is_angle]).abs().max() < 1e-8
    assert (log_det_forward + log_det_inverse).abs().max() < 1e-8
    standardized = (x[:, ~is_angle] - flow.loc[~is_angle]) / flow.scale[~is_angle]
    assert (z[:, ~is_angle] - standardized).abs().max() > 0.1  # the perturbation matters
    assert _angular_difference(z[:, is_angle], x[:, is_angle] - flow.circular_loc[is_angle]).abs().max() > 0.1


def _autograd_log_det(function, points):
    out = []
    for point in points:
        jacobian = torch.autograd.functional.jacobian(lambda v: function(v[None])[0][0], point)
        out.append(torch.linalg.slogdet(jacobian).logabsdet)
    return torch.stack(out)


def test_mixed_flow_log_det_matches_autograd_jacobian():
    flow = _mixed_flow(_CIRCULAR_5, seed=2, tail_bound=2.0)
    generator = torch.Generator().manual_seed(8)
    z = flow.sample_base(12, generator=generator)
    z[:, ~torch.tensor(_CIRCULAR_5)] *= 2.0  # reach into the tails too
    x, log_det_forward = flow.forward(z)
    torch.testing.assert_close(log_det_forward, _autograd_log_det(flow.forward, z), atol=1e-8, rtol=1e-6)
    _, log_det_inverse = flow.inverse(x)
    torch.testing.assert_close(log_det_inverse, _autograd_log_det(flow.inverse, x), atol=1e-8, rtol=1e-6)
    assert (log_det_forward - torch.log(flow.scale).sum()).abs().max() > 0.1


def test_mixed_flow_density_is_periodic_in_the_angles():
    flow = _mixed_flow(_CIRCULAR_5, seed=3)
    x = _random_points(_CIRCULAR_5, 300, torch.Generator().manual_seed(9))
    turned = x + TWO_PI * torch.tensor([2.0, 0.0, 0.0, -1.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(flow.log_prob(turned), flow.log_prob(x), atol=1e-10, rtol=0)


def test_mixed_flow_log_prob_integrates_to_one():
    # Coordinate 0 real, 1 an angle. A moderate perturbation, so the grid resolves the density.
    flow = _mixed_flow([False, True], seed=4, std=0.3, tail_bound=3.0)
    loc, scale = flow.loc[0].item(), flow.scale[0].item()
    # Beyond 3 standardized units the real coordinate has Gaussian tails: loc ± 9 scale is ample.
    h_real = 0.04
    real = torch.arange(loc - 9 * scale, loc + 9 * scale, h_real, dtype=torch.float64)
    n_angles = 300  # midpoint rule on the circle (periodic integrand)
    angles = -math.pi + TWO_PI * (torch.arange(n_angles, dtype=torch.float64) + 0.5) / n_angles
    rr, aa = torch.meshgrid(real, angles, indexing="ij")
    points = torch.stack([rr.reshape(-1), aa.reshape(-1)], dim=-1)
    with torch.no_grad():
        log_q = torch.cat([flow.log_prob(chunk) for chunk in points.split(65536)])
    total = log_q.exp().sum().item() * h_real * (TWO_PI / n_angles)
    assert abs(total - 1.0) < 1e-2
    initial = torch.distributions.Normal(loc, scale).log_prob(points[:, 0]) - math.log(TWO_PI)
    assert (log_q - initial).abs().max() > 0.5  # far from the initial density


@pytest.mark.parametrize("double", [False, True])
def test_mixed_flow_samples_have_their_log_prob_and_lie_on_the_circle(double):
    flow = _mixed_flow(_CIRCULAR_5, seed=5, double=double)
    dtype = torch.float64 if double else torch.float32
    x, log_q = flow.sample(3000, generator=torch.Generator().manual_seed(10))
    x_again, log_q_again = flow.sample(3000, generator=torch.Generator().manual_seed(10))
    assert x.dtype == dtype and log_q.shape == (3000,) and not log_q.requires_grad
    assert torch.equal(x, x_again) and torch.equal(log_q, log_q_again)
    angles = x[:, torch.tensor(_CIRCULAR_5)]
    assert (angles >= -math.pi).all() and (angles < math.pi).all()
    tolerance = 1e-8 if double else 1e-3
    assert (flow.log_prob(x) - log_q).abs().max() < tolerance
    # Base points on the cut itself also come out on [-π, π).
    z = torch.tensor([[-math.pi, 0.0, 0.0, math.pi, 0.0], [math.pi - 1e-7, 9.0, -9.0, -math.pi + 1e-7, 0.0]], dtype=dtype)
    edge_angles = flow.forward(z)[0][:, torch.tensor(_CIRCULAR_5)]
    assert (edge_angles >= -math.pi).all() and (edge_angles < math.pi).all()


def test_mixed_flow_save_and_rebuild(tmp_path):
    flow = _mixed_flow(_CIRCULAR_5, seed=6, double=False, n_layers=3, hidden=8, n_bins=6, tail_bound=4.0)
    path = tmp_path / "flow.pt"
    torch.save({"config": flow.config, "state": flow.state_dict()}, path)
    saved = torch.load(path, weights_only=True)
    rebuilt = MixedSplineCouplingFlow(**saved["config"])
    rebuilt.load_state_dict(saved["state"])
    assert saved["config"]["circular"] == _CIRCULAR_5
    x = _random_points(_CIRCULAR_5, 50, torch.Generator().manual_seed(11), dtype=torch.float32)
    assert torch.equal(rebuilt.log_prob(x), flow.log_prob(x))
    assert torch.equal(rebuilt.circular_loc, flow.circular_loc)


# -------------------------------------------------------------------------------------- training

_KAPPA, _MU = 2.0, 2.8  # von Mises concentration and mean angle (rad): the mode sits near the cut
_MEAN, _STD = 0.5, 0.8


def _von_mises_gaussian_sample(n, seed):
    rng = np.random.default_rng(seed)
    angle = rng.vonmises(_MU, _KAPPA, n)
    real = rng.normal(_MEAN, _STD, n)
    return torch.tensor(np.stack([angle, real], axis=1))


def _von_mises_gaussian_log_density(x):
    kappa = torch.tensor(_KAPPA, dtype=torch.float64)
    log_von_mises = _KAPPA * torch.cos(x[:, 0] - _MU) - math.log(TWO_PI) - torch.log(torch.special.i0(kappa))
    return log_von_mises + torch.distributions.Normal(_MEAN, _STD).log_prob(x[:, 1])


def _von_mises_gaussian_entropy():
    kappa = torch.tensor(_KAPPA, dtype=torch.float64)
    i0, i1 = torch.special.i0(kappa).item(), torch.special.i1(kappa).item()
    von_mises = math.log(TWO_PI * i0) - _KAPPA * i1 / i0
    gaussian = 0.5 * math.log(TWO_PI * math.e * _STD**2)
    return von_mises + gaussian


def test_training_approaches_von_mises_gaussian_entropy():
    data = _von_mises_gaussian_sample(4000, seed=12)
    test = _von_mises_gaussian_sample(20000, seed=13)
    entropy = _von_mises_gaussian_entropy()
    # The analytic density agrees with its samples (guards the truth itself).
    assert abs(-_von_mises_gaussian_log_density(test).mean().item() - entropy) < 0.03
    torch.manual_seed(0)
    # circular_loc stays 0, so the flow itself must carry the mass across the cut at ±π.
    flow = MixedSplineCouplingFlow(
        2, [True, False], n_layers=4, hidden=32, loc=torch.tensor([0.0, data[:, 1].mean()]),
        scale=torch.tensor([1.0, data[:, 1].std()]),
    )

    def test_nll():
        with torch.no_grad():
            return -flow.log_prob(test.float()).double().mean().item()

    nll_before = test_nll()
    curves = train_flow(flow, data.float(), steps=300, batch_size=256, learning_rate=1e-2, log=_silent, log_every=100)
    nll_after = test_nll()
    assert nll_before - entropy > 0.5  # uniform in the angle: KL(von Mises || uniform) ≈ 0.57
    assert abs(nll_after - entropy) < 0.05  # sampling error of the test NLL ≈ 0.008
    # The held-out split (400 samples, NLL noise ~0.05) tells the same story.
    assert curves["validation_nll"][-1] < nll_before - 0.3


def test_reverse_kl_training_runs_on_mixed_flow():
    # The energy term draws its noise from sample_base: uniform angles, normal reals.
    data = _von_mises_gaussian_sample(500, seed=14).float()

    def reduced_energy(x):
        return -_von_mises_gaussian_log_density(x)

    torch.manual_seed(0)
    flow = MixedSplineCouplingFlow(2, [True, False], n_layers=2, hidden=8)
    curves = train_flow(
        flow, data, reduced_energy=reduced_energy, energy_weight=1.0, steps=30, batch_size=64,
        energy_batch_size=64, learning_rate=1e-2, log=_silent, log_every=10,
    )
    assert np.isfinite(curves["reverse_kl"]).all() and (curves["nonfinite_energy"] == 0).all()
    # E_q[u + log q] = KL(q || p) - log Z with log Z = 0 here: it cannot go below 0 (up to noise).
    assert curves["reverse_kl"][-1] < curves["reverse_kl"][0] and curves["reverse_kl"][-1] > -0.1
