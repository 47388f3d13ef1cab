"""Normalizing flows: coupling flows with rational-quadratic spline couplings.

Implements the "Neural Spline Flow" coupling transform of Durkan et al. (2019), arXiv:1906.04032,
with linear ("unconstrained") tails, for low-dimensional inputs (dim >= 2).

Conventions used throughout this module:

- ``x`` is data space (the physical coordinates the flow models), ``z`` is base space, where the base
  distribution is a standard normal N(0, I) in ``dim`` dimensions.
- ``forward`` is the *generative* direction z -> x and returns log|det dx/dz|;
  ``inverse`` is the *density* direction x -> z and returns log|det dz/dx|. The two log-determinants
  of a pair (z, x = forward(z)) are negatives of each other.
- ``log_prob(x) = log N(z; 0, I) + log|det dz/dx|`` is the log-density in data space.
- All log-densities and log-determinants are natural logarithms of densities with respect to the
  Lebesgue measure in the units of ``x``; for the reduced (dimensionless) energies used in boltzflow
  they are compared with ``-u(x)`` as they are, so ``log w = -u(x) - log q(x)``.
- Shapes: inputs ``[batch, dim]``, log-densities and log-determinants ``[batch]``.

The flow is, in the generative direction,

    x = loc + scale * (T_L ∘ ... ∘ T_1)(z),

where each T_l is a spline coupling layer that transforms one subset of the coordinates elementwise,
conditioned on the complementary subset. ``loc`` and ``scale`` are a fixed (non-trained) affine
standardization, so that the couplings act on roughly unit-scale coordinates, where the spline
interval [-tail_bound, tail_bound] is meaningful.

``MixedSplineCouplingFlow`` extends this to coordinates of which some are angles in radians (e.g.
torsions), living on the circle [-π, π): their base distribution is uniform there, and they are
transformed by circular splines (Rezende et al. 2020, arXiv:2002.02428), diffeomorphisms of the
circle, so the density is periodic and smooth across the cut at ±π.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: Lower bounds on the normalized bin widths, bin heights and knot derivatives of the splines.
#: They keep every bin from collapsing (which would make the inverse ill-conditioned) and keep the
#: derivative away from 0 (which would make log|det| -> -inf).
MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3

# softplus(x + _DERIVATIVE_SHIFT) + MIN_DERIVATIVE == 1 at x == 0, so that a conditioner whose output
# is all zeros gives uniform bins with unit derivatives, i.e. the identity map.
_DERIVATIVE_SHIFT = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


def rational_quadratic_spline(
    inputs: torch.Tensor,
    unnormalized_widths: torch.Tensor,
    unnormalized_heights: torch.Tensor,
    unnormalized_derivatives: torch.Tensor,
    *,
    inverse: bool = False,
    tail_bound: float = 5.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Monotone rational-quadratic spline on [-B, B] with identity (linear) tails outside it.

    Elementwise map of ``inputs`` (any shape ``S``), with parameters of shape ``S + [K]`` for the
    widths and heights and ``S + [K - 1]`` for the interior knot derivatives (``K`` bins). The
    derivatives at the two boundary knots are fixed to 1, so the spline joins the identity tails
    with a continuous first derivative (Durkan et al. 2019, section 3.1 and appendix A).

    Returns ``(outputs, logabsdet)``, both of shape ``S``: for ``inverse=False`` the spline value
    y = g(x) and log|dg/dx|; for ``inverse=True`` x = g^{-1}(y) and log|dg^{-1}/dy| (i.e. the
    log-derivative of the direction actually computed). In the tails, outputs = inputs and
    logabsdet = 0.
    """
    bound = float(tail_bound)
    n_bins = unnormalized_widths.shape[-1]
    _check_bin_count(n_bins)

    inside = (inputs >= -bound) & (inputs <= bound)
    # Evaluate the spline on inputs clamped into the interval and select with torch.where: the
    # discarded branch is then finite, so it contributes exact zeros (not NaN) to gradients.
    # Values exactly at +-B are inside and map to +-B (the knots there are pinned below).
    clamped = inputs.clamp(-bound, bound)

    cumwidths = _knot_positions(_bin_fractions(unnormalized_widths, MIN_BIN_WIDTH), bound)
    cumheights = _knot_positions(_bin_fractions(unnormalized_heights, MIN_BIN_HEIGHT), bound)
    derivatives = _knot_derivatives(unnormalized_derivatives)
    ones = torch.ones_like(derivatives[..., :1])
    derivatives = torch.cat([ones, derivatives, ones], dim=-1)  # unit slope at both boundaries

    spline_out, logabsdet = _spline_on_knots(clamped, cumwidths, cumheights, derivatives, inverse=inverse)
    outputs = torch.where(inside, spline_out, inputs)
    logabsdet = torch.where(inside, logabsdet, torch.zeros_like(logabsdet))
    return outputs, logabsdet


def circular_rational_quadratic_spline(
    inputs: torch.Tensor,
    unnormalized_widths: torch.Tensor,
    unnormalized_heights: torch.Tensor,
    unnormalized_derivatives: torch.Tensor,
    *,
    inverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Monotone rational-quadratic spline that is a diffeomorphism of the circle [-π, π) (radians).

    Elementwise map of ``inputs`` (any shape ``S``, angles in radians; wrapped into [-π, π) first),
    with parameters of shape ``S + [K]`` each (``K`` bins on [-π, π]). The knots at -π and π are
    fixed points, and both take the same derivative, the *first* entry of
    ``unnormalized_derivatives``; the other K - 1 entries are the interior knot derivatives. So the
    map and its first derivative are continuous across the cut at ±π, as a circle map must be
    (Rezende et al. 2020, "Normalizing flows on tori and spheres", section 2.1). All-zero
    parameters give uniform bins and unit derivatives, i.e. the identity.

    Returns ``(outputs, logabsdet)``, both of shape ``S``, with outputs in [-π, π): for
    ``inverse=False`` y = g(x) and log|dg/dx|; for ``inverse=True`` x = g^{-1}(y) and
    log|dg^{-1}/dy|. Unlike ``rational_quadratic_spline`` there are no tails: every angle is
    transformed.
    """
    n_bins = unnormalized_widths.shape[-1]
    _check_bin_count(n_bins)
    if unnormalized_derivatives.shape[-1] != n_bins:
        raise ValueError(
            f"a circular spline with {n_bins} bins takes {n_bins} derivatives, got {unnormalized_derivatives.shape[-1]}"
        )
    angles = _wrap_angle(inputs)
    cumwidths = _knot_positions(_bin_fractions(unnormalized_widths, MIN_BIN_WIDTH), math.pi)
    cumheights = _knot_positions(_bin_fractions(unnormalized_heights, MIN_BIN_HEIGHT), math.pi)
    derivatives = _knot_derivatives(unnormalized_derivatives)
    derivatives = torch.cat([derivatives, derivatives[..., :1]], dim=-1)  # knot at π shares the one at -π
    outputs, logabsdet = _spline_on_knots(angles, cumwidths, cumheights, derivatives, inverse=inverse)
    # The knot at π is the knot at -π: an output rounded onto π belongs at -π.
    return _wrap_angle(outputs), logabsdet


def _wrap_angle(angles: torch.Tensor) -> torch.Tensor:
    """Angles (radians) mapped into [-π, π); those already there are returned bit for bit.

    Wrapping only what is outside keeps full precision near 0, where (a + π) - π would round.
    """
    inside = (angles >= -math.pi) & (angles < math.pi)
    wrapped = torch.remainder(angles + math.pi, 2.0 * math.pi) - math.pi
    # remainder can round up to exactly 2π for inputs a hair below a multiple of it.
    wrapped = torch.where(wrapped >= math.pi, wrapped - 2.0 * math.pi, wrapped)
    return torch.where(inside, angles, wrapped)


def _check_bin_count(n_bins: int) -> None:
    if MIN_BIN_WIDTH * n_bins > 1.0 or MIN_BIN_HEIGHT * n_bins > 1.0:
        raise ValueError(f"too many bins ({n_bins}) for the minimal bin width/height")


def _bin_fractions(unnormalized: torch.Tensor, min_fraction: float) -> torch.Tensor:
    """Bin sizes as fractions of the interval, each at least ``min_fraction``, summing to 1."""
    n_bins = unnormalized.shape[-1]
    fractions = F.softmax(unnormalized, dim=-1)
    return min_fraction + (1.0 - min_fraction * n_bins) * fractions


def _knot_derivatives(unnormalized: torch.Tensor) -> torch.Tensor:
    """Knot derivatives, at least MIN_DERIVATIVE; exactly 1 for a zero input."""
    return MIN_DERIVATIVE + F.softplus(unnormalized + _DERIVATIVE_SHIFT)


def _spline_on_knots(
    inputs: torch.Tensor,
    cumwidths: torch.Tensor,
    cumheights: torch.Tensor,
    derivatives: torch.Tensor,
    *,
    inverse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rational-quadratic spline through given knots, for inputs inside [first knot, last knot].

    ``cumwidths`` and ``cumheights`` ``[..., K+1]`` are the knot positions on the input and output
    axes, ``derivatives`` ``[..., K+1]`` the slopes at the knots. Returns the value and the
    log-derivative of the direction computed, as ``rational_quadratic_spline`` does.
    """
    n_bins = cumwidths.shape[-1] - 1
    widths = cumwidths[..., 1:] - cumwidths[..., :-1]
    heights = cumheights[..., 1:] - cumheights[..., :-1]

    # Bin index = number of interior knots <= input, in [0, K-1]. The clamp guards against NaN
    # inputs and rounding at the boundary knots, so the gathers below can never go out of range.
    knots = cumheights if inverse else cumwidths
    bin_idx = torch.searchsorted(knots[..., 1:-1].contiguous(), inputs[..., None].contiguous(), right=True)
    bin_idx = bin_idx.clamp(0, n_bins - 1)

    def gather(t):
        return t.gather(-1, bin_idx)[..., 0]

    x_k = gather(cumwidths)
    w_k = gather(widths)
    y_k = gather(cumheights)
    h_k = gather(heights)
    d_k = gather(derivatives[..., :-1])
    d_k1 = gather(derivatives[..., 1:])
    s_k = h_k / w_k
    # Common term of the denominator: d_k + d_{k+1} - 2 s_k.
    curvature = d_k1 + d_k - 2.0 * s_k

    if inverse:
        # Solve y = y_k + h_k [s θ² + d_k θ(1-θ)] / [s + c θ(1-θ)] for θ: a θ² + b θ + c0 = 0,
        # using the numerically stable root 2 c0 / (-b - sqrt(b² - 4 a c0)) (appendix A of the paper).
        dy = inputs - y_k
        a = h_k * (s_k - d_k) + dy * curvature
        b = h_k * d_k - dy * curvature
        c0 = -s_k * dy
        discriminant = (b.pow(2) - 4.0 * a * c0).clamp_min(0.0)  # >= 0 mathematically; rounding aside
        theta = (2.0 * c0) / (-b - torch.sqrt(discriminant))
        theta = theta.clamp(0.0, 1.0)
        outputs = x_k + theta * w_k
    else:
        theta = ((inputs - x_k) / w_k).clamp(0.0, 1.0)
        t1mt = theta * (1.0 - theta)
        numerator = h_k * (s_k * theta.pow(2) + d_k * t1mt)
        outputs = y_k + numerator / (s_k + curvature * t1mt)

    # log dg/dx at θ (eq. 5 of the paper); the inverse direction uses its negative.
    t1mt = theta * (1.0 - theta)
    denominator = s_k + curvature * t1mt
    derivative_numerator = s_k.pow(2) * (d_k1 * theta.pow(2) + 2.0 * s_k * t1mt + d_k * (1.0 - theta).pow(2))
    logabsdet = torch.log(derivative_numerator) - 2.0 * torch.log(denominator)
    if inverse:
        logabsdet = -logabsdet
    return outputs, logabsdet


def _knot_positions(sizes: torch.Tensor, bound: float) -> torch.Tensor:
    """Cumulative knot positions on [-bound, bound] from normalized bin sizes ``[..., K]`` -> ``[..., K+1]``."""
    cum = F.pad(torch.cumsum(sizes, dim=-1), (1, 0), value=0.0)
    cum = 2.0 * bound * cum - bound
    # Pin the end knots exactly (the cumulative sum can miss 1 by rounding), so that +-B are fixed
    # points of the spline and the tails join continuously.
    return torch.cat([torch.full_like(cum[..., :1], -bound), cum[..., 1:-1], torch.full_like(cum[..., :1], bound)], dim=-1)


def zero_output_mlp(width_in: int, hidden: int, n_hidden_layers: int, n_out: int) -> nn.Sequential:
    """An MLP (SiLU activations) whose last layer starts at zero, so that the module it parameterizes
    starts as its neutral element (an identity coupling, a reference score)."""
    layers: list[nn.Module] = []
    for _ in range(n_hidden_layers):
        layers += [nn.Linear(width_in, hidden), nn.SiLU()]
        width_in = hidden
    last = nn.Linear(width_in, n_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


def standardization(dim: int, loc, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed loc and scale [dim] in the default dtype (default 0 and 1), checked finite and scale > 0."""
    dtype = torch.get_default_dtype()
    loc = torch.zeros(dim, dtype=dtype) if loc is None else torch.as_tensor(loc, dtype=dtype).detach().clone()
    scale = torch.ones(dim, dtype=dtype) if scale is None else torch.as_tensor(scale, dtype=dtype).detach().clone()
    if loc.shape != (dim,) or scale.shape != (dim,):
        raise ValueError(f"loc and scale must have shape [{dim}], got {tuple(loc.shape)} and {tuple(scale.shape)}")
    if not (torch.isfinite(loc).all() and torch.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError("loc must be finite and scale finite and positive")
    return loc, scale


def _coupling_architecture(dim, n_layers, hidden, n_hidden_layers, n_bins, tail_bound) -> dict:
    """Checked constructor arguments shared by the coupling flows, as plain ints and floats."""
    if dim < 2:
        raise ValueError(f"dim must be >= 2 for a coupling flow, got {dim}")
    if n_layers < 2:
        raise ValueError(f"n_layers must be >= 2 so that every coordinate is transformed, got {n_layers}")
    if n_bins < 1 or hidden < 1 or n_hidden_layers < 1:
        raise ValueError("n_bins, hidden and n_hidden_layers must be positive")
    if not tail_bound > 0:
        raise ValueError(f"tail_bound must be positive, got {tail_bound}")
    return dict(n_layers=int(n_layers), hidden=int(hidden), n_hidden_layers=int(n_hidden_layers),
                n_bins=int(n_bins), tail_bound=float(tail_bound))


class _SplineCoupling(nn.Module):
    """One coupling layer: coordinates ``transform_idx`` go through a spline whose parameters are
    an MLP of coordinates ``condition_idx``; the conditioning coordinates pass through unchanged.

    ``forward`` is the generative direction (base side -> data side) and returns log|det| of that
    direction; ``inverse`` the opposite.
    """

    def __init__(self, transform_idx, condition_idx, hidden, n_hidden_layers, n_bins, tail_bound, n_context=0):
        super().__init__()
        # Index buffers are saved in the state dict, so a reloaded model uses exactly the same masks.
        self.register_buffer("transform_idx", torch.as_tensor(transform_idx, dtype=torch.long))
        self.register_buffer("condition_idx", torch.as_tensor(condition_idx, dtype=torch.long))
        self.n_bins = n_bins
        self.tail_bound = tail_bound
        n_out = len(transform_idx) * (3 * n_bins - 1)  # K widths, K heights, K-1 interior derivatives
        # Zero output -> uniform bins and unit derivatives -> the layer starts as the identity.
        self.conditioner = zero_output_mlp(len(condition_idx) + n_context, hidden, n_hidden_layers, n_out)

    def _transform(self, inputs, inverse, context):
        params = self.conditioner(_with_context(inputs[:, self.condition_idx], context))
        params = params.view(inputs.shape[0], len(self.transform_idx), 3 * self.n_bins - 1)
        widths = params[..., : self.n_bins]
        heights = params[..., self.n_bins : 2 * self.n_bins]
        derivatives = params[..., 2 * self.n_bins :]
        transformed, logabsdet = rational_quadratic_spline(
            inputs[:, self.transform_idx], widths, heights, derivatives, inverse=inverse, tail_bound=self.tail_bound
        )
        # index_copy is out of place, so autograd sees a clean graph.
        outputs = inputs.index_copy(1, self.transform_idx, transformed)
        return outputs, logabsdet.sum(dim=-1)

    def forward(self, inputs, context=None):
        return self._transform(inputs, inverse=False, context=context)

    def inverse(self, inputs, context=None):
        return self._transform(inputs, inverse=True, context=context)


def _with_context(features: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """A conditioner's input: its coordinate features, then the context columns (e.g. ln T/T_target)."""
    return features if context is None else torch.cat([features, context], dim=1)


def _coupling_partitions(dim: int, n_layers: int) -> list[tuple[list[int], list[int]]]:
    """(transform, condition) index lists for each layer.

    Layers come in pairs that transform complementary halves A and B of a coordinate ordering, so
    every coordinate is transformed once per pair. For dim 2 the ordering is fixed, which gives the
    strict alternation x0 | x1, x1 | x0, ... For dim > 2 the first pair uses contiguous halves and
    later pairs use fixed pseudo-random permutations (a private generator, so building a model does
    not touch the global RNG), so that every coordinate is eventually conditioned on every other.
    """
    generator = torch.Generator().manual_seed(20190610)
    partitions = []
    half = dim // 2
    order = list(range(dim))
    for layer in range(n_layers):
        if layer % 2 == 0 and layer > 0 and dim > 2:
            order = torch.randperm(dim, generator=generator).tolist()
        a, b = sorted(order[:half]), sorted(order[half:])
        partitions.append((a, b) if layer % 2 == 0 else (b, a))
    return partitions


class ConfiguredModule(nn.Module):
    """A module that ``type(module)(**module.config)`` followed by ``load_state_dict`` rebuilds (buffers such
    as loc/scale come with the state dict). Subclasses keep their constructor arguments in ``_config``."""

    @property
    def config(self) -> dict:
        """Constructor arguments (ints, floats and lists of them), copied."""
        return {key: list(value) if isinstance(value, list) else value for key, value in self._config.items()}

    @property
    def dim(self) -> int:
        return self._config["dim"]


class _CouplingFlow(ConfiguredModule):
    """What every coupling flow shares: the stack of coupling layers between a fixed map of the data onto
    coupling space (``_to_couplings``, with log|det| ``-Σ log scale``) and the base distribution.

    A flow built with ``temperature_conditioned=True`` models a family q(x | T) over temperatures: every
    call takes ``temperature_ratio`` τ = T / T_target (a number, or one per row), every conditioner sees
    ln τ as one more input, and the real coordinates are standardized by ``scale`` × √τ, the width of a
    harmonic mode at T, so that the couplings learn only how each temperature departs from harmonic
    scaling (angles are not scaled). At τ = 1 the standardization is the unconditioned one.

    Subclasses define ``_to_couplings``, ``_from_couplings``, ``base_log_prob`` and ``sample_base``,
    and register ``loc``, ``scale``, ``real_mask`` and ``layers``.
    """

    @property
    def temperature_conditioned(self) -> bool:
        return bool(self._config.get("temperature_conditioned", False))

    def _temperature(self, temperature_ratio, like: torch.Tensor):
        """(conditioner context [batch, 1], per-row factor on ``scale`` [batch, dim]) of one call, or (None, None)."""
        if not self.temperature_conditioned:
            if temperature_ratio is not None:
                raise ValueError("temperature_ratio given to a flow that is not temperature-conditioned")
            return None, None
        if temperature_ratio is None:
            raise ValueError("a temperature-conditioned flow needs temperature_ratio = T / T_target")
        ratio = torch.as_tensor(temperature_ratio, dtype=like.dtype, device=like.device)
        log_ratio = torch.log(ratio).reshape(-1).expand(like.shape[0])
        factor = torch.where(self.real_mask, torch.exp(0.5 * log_ratio)[:, None], torch.ones_like(like))
        return log_ratio[:, None], factor

    def _log_scale(self, factor) -> torch.Tensor:
        """Σ log of the standardization's scale: a number, or [batch] for a temperature-conditioned call."""
        log_scale = torch.log(self.scale).sum()
        return log_scale if factor is None else log_scale + torch.log(factor).sum(dim=-1)

    def forward(self, z: torch.Tensor, temperature_ratio=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Generative direction: base z [batch, dim] -> data x [batch, dim], with log|det dx/dz| [batch]."""
        context, factor = self._temperature(temperature_ratio, z)
        log_det = z.new_zeros(z.shape[0])
        h = z
        for layer in self.layers:
            h, ld = layer(h, context)
            log_det = log_det + ld
        return self._from_couplings(h, factor), log_det + self._log_scale(factor)

    def inverse(self, x: torch.Tensor, temperature_ratio=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Density direction: data x [batch, dim] -> base z [batch, dim], with log|det dz/dx| [batch]."""
        context, factor = self._temperature(temperature_ratio, x)
        h = self._to_couplings(x, factor)
        log_det = x.new_zeros(x.shape[0]) - self._log_scale(factor)
        for layer in reversed(self.layers):
            h, ld = layer.inverse(h, context)
            log_det = log_det + ld
        return h, log_det

    def log_prob(self, x: torch.Tensor, temperature_ratio=None) -> torch.Tensor:
        """log q(x) = base_log_prob(z) + log|det dz/dx| with z = inverse(x), shape [batch]."""
        z, log_det = self.inverse(x, temperature_ratio)
        return self.base_log_prob(z) + log_det

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               temperature_ratio=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw n samples x ~ q; returns (x [n, dim], log q(x) [n]), without gradients.

        The base noise is drawn from ``generator`` (on the generator's device, then moved to the
        model's), so a seeded generator gives reproducible samples. For reparameterized gradients
        (reverse KL training) call ``forward`` on ``sample_base`` instead.
        """
        z = self.sample_base(n, generator=generator)
        x, log_det = self.forward(z, temperature_ratio)
        return x, self.base_log_prob(z) - log_det

    def _scale(self, factor) -> torch.Tensor:
        return self.scale if factor is None else self.scale * factor


class FlowAtTemperature(nn.Module):
    """A temperature-conditioned flow at one temperature, with the interface of an unconditioned flow.

    ``temperature_ratio`` is T / T_target. For training on the whole ladder, ``log_prob`` also takes rows
    with one more column than the flow's ``dim``: the last column is that row's own temperature ratio (the
    maximum-likelihood data of every temperature); ``forward``, ``sample`` and rows without it are at
    ``temperature_ratio`` (the energy terms and ESS monitor of training, at the target with ratio 1).
    """

    def __init__(self, flow: _CouplingFlow, temperature_ratio: float = 1.0):
        super().__init__()
        if not flow.temperature_conditioned:
            raise ValueError("FlowAtTemperature needs a temperature-conditioned flow")
        self.flow = flow
        self.temperature_ratio = float(temperature_ratio)

    @property
    def dim(self) -> int:
        return self.flow.dim

    @property
    def loc(self) -> torch.Tensor:
        return self.flow.loc

    @property
    def circular_idx(self) -> torch.Tensor:
        return getattr(self.flow, "circular_idx", self.flow.loc.new_empty(0, dtype=torch.long))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flow.forward(z, self.temperature_ratio)

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flow.inverse(x, self.temperature_ratio)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == self.dim + 1:
            return self.flow.log_prob(x[:, :-1], x[:, -1])
        return self.flow.log_prob(x, self.temperature_ratio)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flow.sample(n, generator=generator, temperature_ratio=self.temperature_ratio)

    def sample_base(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.flow.sample_base(n, generator=generator)

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.flow.base_log_prob(z)


class SplineCouplingFlow(_CouplingFlow):
    """Coupling flow with rational-quadratic spline couplings and a standard-normal base.

    Parameters
    ----------
    dim:
        Dimension of x (and z); at least 2.
    n_layers:
        Number of coupling layers; at least 2, so that every coordinate is transformed.
    hidden, n_hidden_layers:
        Width and number of hidden layers of each conditioner MLP (SiLU activations).
    n_bins:
        Number of spline bins K.
    tail_bound:
        The splines act on [-tail_bound, tail_bound] in *standardized* coordinates (x - loc) / scale
        and are the identity outside it.
    loc, scale:
        Fixed affine standardization, tensors of shape [dim] (default 0 and 1), in the units of x.
        Registered as buffers, so they are in the state dict and follow ``.to``/``.double()``.

    The flow is created in the default dtype (float32 normally) and starts as (exactly) the
    standardization composed with the identity, i.e. q = N(loc, diag(scale²)). It can be converted
    with ``.double()``. See the module docstring for direction and sign conventions.
    """

    def __init__(
        self,
        dim: int,
        n_layers: int = 8,
        hidden: int = 64,
        n_hidden_layers: int = 2,
        n_bins: int = 8,
        tail_bound: float = 5.0,
        loc: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        temperature_conditioned: bool = False,
    ):
        super().__init__()
        self._config = dict(dim=int(dim), **_coupling_architecture(dim, n_layers, hidden, n_hidden_layers,
                                                                    n_bins, tail_bound),
                            temperature_conditioned=bool(temperature_conditioned))
        loc, scale = standardization(dim, loc, scale)
        self.register_buffer("loc", loc)
        self.register_buffer("scale", scale)
        # Derived from config, so left out of the state dict: every coordinate is real.
        self.register_buffer("real_mask", torch.ones(dim, dtype=torch.bool), persistent=False)
        self.layers = nn.ModuleList(
            _SplineCoupling(t, c, hidden, n_hidden_layers, n_bins, float(tail_bound),
                            n_context=int(temperature_conditioned))
            for t, c in _coupling_partitions(dim, n_layers)
        )

    def _to_couplings(self, x: torch.Tensor, factor=None) -> torch.Tensor:
        return (x - self.loc) / self._scale(factor)

    def _from_couplings(self, h: torch.Tensor, factor=None) -> torch.Tensor:
        return self.loc + self._scale(factor) * h

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, I), shape [batch]."""
        return -0.5 * z.pow(2).sum(dim=-1) - 0.5 * self.dim * math.log(2.0 * math.pi)

    def sample_base(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws z ~ N(0, I) from the base distribution, [n, dim], on the model's device and dtype.

        The noise is drawn on ``generator``'s device (the model's without one) and then moved, so a
        seeded generator gives the same z whatever the model's device.
        """
        device, dtype = self.loc.device, self.loc.dtype
        noise_device = generator.device if generator is not None else device
        return torch.randn(n, self.dim, generator=generator, device=noise_device, dtype=dtype).to(device)


class _MixedSplineCoupling(nn.Module):
    """Coupling layer over real and circular coordinates (``circular[i]`` True: an angle in radians).

    The transformed coordinates go through the linear-tailed spline (real ones) or the circular
    spline (angles), with parameters from an MLP of the conditioning coordinates. That MLP sees
    each conditioning angle as (cos, sin), so the layer is a smooth function on the torus. Same
    directions and log|det| conventions as ``_SplineCoupling``.
    """

    def __init__(self, transform_idx, condition_idx, circular, hidden, n_hidden_layers, n_bins, tail_bound,
                 n_context=0):
        super().__init__()

        def split(indices):
            real = torch.as_tensor([i for i in indices if not circular[i]], dtype=torch.long)
            angles = torch.as_tensor([i for i in indices if circular[i]], dtype=torch.long)
            return real, angles

        transform_real, transform_angles = split(transform_idx)
        condition_real, condition_angles = split(condition_idx)
        self.register_buffer("transform_real_idx", transform_real)
        self.register_buffer("transform_circular_idx", transform_angles)
        self.register_buffer("condition_real_idx", condition_real)
        self.register_buffer("condition_circular_idx", condition_angles)
        self.n_bins = n_bins
        self.tail_bound = tail_bound
        self._n_real = len(transform_real)
        self._n_circular = len(transform_angles)
        # Per coordinate: K widths, K heights, and K - 1 interior derivatives (real, the boundary
        # slopes are pinned to 1) or K derivatives (angles, one shared by the knots at ±π).
        self._n_real_params = self._n_real * (3 * n_bins - 1)
        n_out = self._n_real_params + self._n_circular * 3 * n_bins
        # Zero output -> uniform bins and unit derivatives in both spline kinds -> identity layer.
        self.conditioner = zero_output_mlp(len(condition_real) + 2 * len(condition_angles) + n_context, hidden,
                                           n_hidden_layers, n_out)

    def _features(self, inputs, context):
        angles = inputs[:, self.condition_circular_idx]
        features = torch.cat([inputs[:, self.condition_real_idx], torch.cos(angles), torch.sin(angles)], dim=1)
        return _with_context(features, context)

    def _transform(self, inputs, inverse, context):
        params = self.conditioner(self._features(inputs, context))
        batch, k = inputs.shape[0], self.n_bins
        outputs = inputs
        logabsdet = inputs.new_zeros(batch)
        if self._n_real:
            p = params[:, : self._n_real_params].reshape(batch, self._n_real, 3 * k - 1)
            transformed, lad = rational_quadratic_spline(
                inputs[:, self.transform_real_idx], p[..., :k], p[..., k : 2 * k], p[..., 2 * k :],
                inverse=inverse, tail_bound=self.tail_bound,
            )
            outputs = outputs.index_copy(1, self.transform_real_idx, transformed)
            logabsdet = logabsdet + lad.sum(dim=-1)
        if self._n_circular:
            p = params[:, self._n_real_params :].reshape(batch, self._n_circular, 3 * k)
            transformed, lad = circular_rational_quadratic_spline(
                inputs[:, self.transform_circular_idx], p[..., :k], p[..., k : 2 * k], p[..., 2 * k :], inverse=inverse
            )
            outputs = outputs.index_copy(1, self.transform_circular_idx, transformed)
            logabsdet = logabsdet + lad.sum(dim=-1)
        return outputs, logabsdet

    def forward(self, inputs, context=None):
        return self._transform(inputs, inverse=False, context=context)

    def inverse(self, inputs, context=None):
        return self._transform(inputs, inverse=True, context=context)


class MixedSplineCouplingFlow(_CouplingFlow):
    """Coupling flow over real coordinates and angles (e.g. torsions), with spline couplings.

    Coordinate i is an angle in radians when ``circular[i]`` is True, and real-valued otherwise.
    The base distribution is N(0, 1) on each real coordinate and Uniform[-π, π) on each angle
    (log density -log 2π), independently. In the generative direction

        x_i = loc_i + scale_i * h_i             (real i),
        x_i = wrap(h_i + circular_loc_i)        (angle i),   h = (T_L ∘ ... ∘ T_1)(z),

    where wrap maps into [-π, π). Each coupling layer T_l transforms its real coordinates with the
    linear-tailed rational-quadratic spline and its angles with the circular spline
    (``circular_rational_quadratic_spline``), conditioned on the other coordinates, angles entering
    the conditioner as (cos, sin). So the flow is a diffeomorphism of R^n_real × (circle)^n_angle,
    and angle outputs (``forward``'s x, ``inverse``'s z) always lie in [-π, π); angle inputs may be
    given unwrapped. Densities are with respect to the Lebesgue measure on that product, in the
    units of x (radians for the angles); the rotation by ``circular_loc`` has unit Jacobian.

    Parameters are those of ``SplineCouplingFlow``, plus:

    circular:
        List of ``dim`` bools, True for the angle coordinates.
    loc, scale:
        Standardization of the real coordinates, shape [dim]; the entries at angle positions are
        ignored (stored as 0 and 1).
    circular_loc:
        Fixed rotation of each angle, shape [dim] in radians (default 0; entries at real positions
        ignored and stored as 0), e.g. the circular mean of the data, so that the couplings start
        from a distribution centred where the data are. Stored wrapped into [-π, π).

    ``loc``, ``scale`` and ``circular_loc`` are buffers (in the state dict, following ``.to`` and
    ``.double()``). The flow starts as the identity after the standardization, i.e.
    q = N(loc, diag(scale²)) on the real coordinates times the uniform distribution on the angles.
    ``forward``, ``inverse``, ``log_prob``, ``sample`` and ``config`` follow ``SplineCouplingFlow``.
    """

    def __init__(
        self,
        dim: int,
        circular: list[bool],
        n_layers: int = 8,
        hidden: int = 64,
        n_hidden_layers: int = 2,
        n_bins: int = 8,
        tail_bound: float = 5.0,
        loc: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        circular_loc: torch.Tensor | None = None,
        temperature_conditioned: bool = False,
    ):
        super().__init__()
        architecture = _coupling_architecture(dim, n_layers, hidden, n_hidden_layers, n_bins, tail_bound)
        circular = [bool(c) for c in circular]
        if len(circular) != dim:
            raise ValueError(f"circular must have {dim} entries, got {len(circular)}")
        self._config = dict(dim=int(dim), circular=circular, **architecture,
                            temperature_conditioned=bool(temperature_conditioned))

        dtype = torch.get_default_dtype()

        def per_coordinate(value, default, name):
            if value is None:
                return torch.full((dim,), default, dtype=dtype)
            value = torch.as_tensor(value, dtype=dtype).detach().clone()
            if value.shape != (dim,):
                raise ValueError(f"{name} must have shape [{dim}], got {tuple(value.shape)}")
            return value

        is_angle = torch.tensor(circular, dtype=torch.bool)
        loc = torch.where(is_angle, 0.0, per_coordinate(loc, 0.0, "loc"))
        scale = torch.where(is_angle, 1.0, per_coordinate(scale, 1.0, "scale"))
        circular_loc = torch.where(is_angle, _wrap_angle(per_coordinate(circular_loc, 0.0, "circular_loc")), 0.0)
        if not (torch.isfinite(loc).all() and torch.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError("loc must be finite and scale finite and positive at the real coordinates")
        if not torch.isfinite(circular_loc).all():
            raise ValueError("circular_loc must be finite at the angle coordinates")
        # loc first: train_flow takes the model's device and dtype from its first buffer.
        self.register_buffer("loc", loc)
        self.register_buffer("scale", scale)
        self.register_buffer("circular_loc", circular_loc)
        self.register_buffer("circular_mask", is_angle)
        # Derived from config, so left out of the state dict.
        self.register_buffer("real_idx", (~is_angle).nonzero()[:, 0], persistent=False)
        self.register_buffer("circular_idx", is_angle.nonzero()[:, 0], persistent=False)
        self.register_buffer("real_mask", ~is_angle, persistent=False)
        self.layers = nn.ModuleList(
            _MixedSplineCoupling(t, c, circular, hidden, n_hidden_layers, n_bins, float(tail_bound),
                                 n_context=int(temperature_conditioned))
            for t, c in _coupling_partitions(dim, n_layers)
        )

    @property
    def circular(self) -> list[bool]:
        """Which coordinates are angles (radians)."""
        return list(self._config["circular"])

    def _to_couplings(self, x: torch.Tensor, factor=None) -> torch.Tensor:
        return torch.where(self.circular_mask, _wrap_angle(x - self.circular_loc), (x - self.loc) / self._scale(factor))

    def _from_couplings(self, h: torch.Tensor, factor=None) -> torch.Tensor:
        # scale (and the temperature factor) is 1 at the angles, so the log|det| of the base class holds for them.
        return torch.where(self.circular_mask, _wrap_angle(h + self.circular_loc), self.loc + self._scale(factor) * h)

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log of N(0, 1) per real coordinate times 1/(2π) per angle, shape [batch].

        Angles are taken to lie on the circle (any real value stands for its wrapped angle).
        """
        gaussian = -0.5 * z.pow(2) - 0.5 * math.log(2.0 * math.pi)
        per_coordinate = torch.where(self.circular_mask, -math.log(2.0 * math.pi), gaussian)
        return per_coordinate.sum(dim=-1)

    def sample_base(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws z [n, dim] from the base distribution, on the model's device and dtype.

        The real coordinates are drawn first (``randn``, [n, n_real]), then the angles (``rand``,
        [n, n_angles], mapped onto [-π, π)), both on ``generator``'s device (the model's without
        one) and then moved, so a seeded generator gives the same z whatever the model's device.
        """
        device, dtype = self.loc.device, self.loc.dtype
        noise_device = generator.device if generator is not None else device
        n_real, n_angles = self.real_idx.numel(), self.circular_idx.numel()
        gaussian = torch.randn(n, n_real, generator=generator, device=noise_device, dtype=dtype).to(device)
        uniform = torch.rand(n, n_angles, generator=generator, device=noise_device, dtype=dtype).to(device)
        # Rounding can land 2π u - π on π itself; that angle is -π.
        angles = _wrap_angle(2.0 * math.pi * uniform - math.pi)
        z = torch.empty(n, self.dim, device=device, dtype=dtype)
        return z.index_copy(1, self.real_idx, gaussian).index_copy(1, self.circular_idx, angles)
