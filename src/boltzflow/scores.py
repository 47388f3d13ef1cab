"""Score models for a variance-preserving (VP) diffusion, and their denoising score-matching training.

Conventions used throughout this module:

- ``x`` is data space (the physical coordinates, in their units), time ``t`` is dimensionless and runs
  over [t_min, 1]: t = t_min is (almost) the data, t = 1 is (almost) N(0, I).
- The forward (noising) SDE is the VP SDE of Song et al. (2021), arXiv:2011.13456:

      dx = -½ β(t) x dt + sqrt(β(t)) dW,       β(t) = β_min + t (β_max - β_min),

  whose transition kernel is x_t | x_0 ~ N(α(t) x_0, σ(t)² I) with α(t) = exp(-½ ∫_0^t β(s) ds) and
  σ(t)² = 1 - α(t)².
- A *score model* is an ``nn.Module`` called as ``model(x, t) -> score`` with x ``[batch, dim]``, t
  ``[batch]``, and the score ∇ₓ log p_t(x) ``[batch, dim]`` in units of 1/x. It has a ``dim``
  attribute, and ``schedule`` when it was built for one.
- Losses are dimensionless numbers per sample (see ``denoising_score_matching_loss``).

Both networks here add a learned correction to the exact score of a *reference Gaussian*: the data
standardization N(loc, diag(scale²)) pushed through the diffusion. With the last layer initialized to
zero, an untrained model is exactly that Gaussian's score (as an untrained flow in ``flows.py`` is the
standardization), so training only has to learn how the data differ from it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from boltzflow import training
from boltzflow.flows import ConfiguredModule, standardization, zero_output_mlp


@dataclasses.dataclass(frozen=True)
class VPSchedule:
    """Linear-β VP noise schedule on t ∈ [t_min, 1] (dimensionless β, per unit of t).

    ``t_min`` > 0 keeps σ(t) away from 0, where the score of the data blows up and the loss weight
    vanishes; samplers stop at t_min, so they draw from the data convolved with N(0, σ(t_min)² I)
    (scaled by α(t_min)), which is the target only up to that small blur.

    All methods take t as a tensor (any shape) and return tensors of the same shape.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-3

    def __post_init__(self):
        if not 0.0 <= self.beta_min <= self.beta_max or self.beta_max <= 0.0:
            raise ValueError(f"need 0 <= beta_min <= beta_max, beta_max > 0; got {self.beta_min}, {self.beta_max}")
        if not 0.0 < self.t_min < 1.0:
            raise ValueError(f"t_min must be in (0, 1), got {self.t_min}")

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """β(t) = β_min + t (β_max - β_min)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integrated_beta(self, t: torch.Tensor) -> torch.Tensor:
        """∫_0^t β(s) ds = β_min t + ½ (β_max - β_min) t²."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Mean coefficient α(t) = exp(-½ ∫_0^t β): E[x_t | x_0] = α(t) x_0."""
        return torch.exp(-0.5 * self.integrated_beta(t))

    def sigma_squared(self, t: torch.Tensor) -> torch.Tensor:
        """Noise variance σ(t)² = 1 - α(t)², computed as -expm1(-∫β) to keep precision at small t."""
        return -torch.expm1(-self.integrated_beta(t))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise standard deviation σ(t) = sqrt(1 - α(t)²)."""
        return torch.sqrt(self.sigma_squared(t))

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Drift f(x, t) = -½ β(t) x of the forward SDE; x [batch, dim], t [batch]."""
        return -0.5 * self.beta(t)[:, None] * x

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """Diffusion coefficient g(t) = sqrt(β(t)) of the forward SDE."""
        return torch.sqrt(self.beta(t))

    @property
    def config(self) -> dict:
        """Constructor arguments (floats), so that ``VPSchedule(**config)`` rebuilds it."""
        return dataclasses.asdict(self)


class _ScoreNetworkBase(ConfiguredModule):
    """What both parameterizations share: standardization, time features, the reference Gaussian.

    Constructor arguments:

    dim:
        Dimension of x.
    hidden, n_hidden_layers:
        Width and depth of the MLP (SiLU activations, so that its derivatives in x, which the
        conservative score and the divergence need, are smooth).
    time_frequencies:
        The MLP sees t through the features [t, sin(π k t), cos(π k t)] for k = 1..time_frequencies.
    loc, scale:
        Fixed standardization, tensors of shape [dim] in the units of x (default 0 and 1): the MLP
        sees (x - loc) / scale, and N(loc, diag(scale²)) is the reference Gaussian. Buffers, so they
        are in the state dict and follow ``.to``/``.double()``.
    beta_min, beta_max, t_min:
        The ``VPSchedule`` the model is trained for (available as ``model.schedule``).
    """

    #: Network outputs per sample: ``dim`` for a vector field (None), or a number (1 for a scalar energy).
    out_features: int | None = None

    def __init__(
        self,
        dim: int,
        hidden: int = 128,
        n_hidden_layers: int = 3,
        time_frequencies: int = 8,
        loc: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        t_min: float = 1e-3,
    ):
        super().__init__()
        if dim < 1 or hidden < 1 or n_hidden_layers < 1 or time_frequencies < 0:
            raise ValueError("dim, hidden and n_hidden_layers must be positive and time_frequencies >= 0")
        self.schedule = VPSchedule(beta_min=float(beta_min), beta_max=float(beta_max), t_min=float(t_min))
        self._config = dict(
            dim=int(dim),
            hidden=int(hidden),
            n_hidden_layers=int(n_hidden_layers),
            time_frequencies=int(time_frequencies),
            **self.schedule.config,
        )
        dtype = torch.get_default_dtype()
        loc, scale = standardization(dim, loc, scale)
        # loc first: training takes the model's device and dtype from its first buffer.
        self.register_buffer("loc", loc)
        self.register_buffer("scale", scale)
        # Derived from config, so left out of the state dict.
        self.register_buffer(
            "time_angular_frequencies", math.pi * torch.arange(1, time_frequencies + 1, dtype=dtype), persistent=False
        )

        # Zero output: the untrained model is exactly the reference Gaussian's score.
        out_features = dim if self.out_features is None else self.out_features
        self.network = zero_output_mlp(dim + 1 + 2 * time_frequencies, hidden, n_hidden_layers, out_features)

    def _network_output(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The MLP of ((x - loc) / scale, time features)."""
        angles = t[:, None] * self.time_angular_frequencies
        features = torch.cat([(x - self.loc) / self.scale, t[:, None], torch.sin(angles), torch.cos(angles)], dim=-1)
        return self.network(features)

    def _reference_variance(self, t: torch.Tensor) -> torch.Tensor:
        """Per-coordinate variance α(t)² scale² + σ(t)² of the diffused reference Gaussian, [batch, dim]."""
        alpha = self.schedule.alpha(t)[:, None]
        return alpha.pow(2) * self.scale.pow(2) + self.schedule.sigma_squared(t)[:, None]

    def reference_score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Exact score of N(loc, diag(scale²)) diffused to time t: -(x - α loc) / (α² scale² + σ²)."""
        alpha = self.schedule.alpha(t)[:, None]
        return -(x - alpha * self.loc) / self._reference_variance(t)


class UnconstrainedScore(_ScoreNetworkBase):
    """Score model whose MLP outputs all ``dim`` components directly (not necessarily a gradient field):

        score(x, t) = reference_score(x, t) + MLP((x - loc) / scale, t) / scale.

    Cheap (one forward pass), but the learned field can have a curl, so it is the score of no density;
    the probability-flow ODE then still defines a q, only not the one the score would suggest.
    See ``_ScoreNetworkBase`` for the constructor arguments.
    """

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Score ∇ₓ log p_t(x) [batch, dim] (units 1/x) at x [batch, dim], t [batch]."""
        return self.reference_score(x, t) + self._network_output(x, t) / self.scale


class ConservativeScore(_ScoreNetworkBase):
    """Score model that is the gradient of a scalar energy, so it is the score of a density:

        E_θ(x, t) = ½ Σ_i (x_i - α loc_i)² / (α² scale_i² + σ²) + MLP((x - loc) / scale, t),
        score(x, t) = -∇ₓ E_θ(x, t)          (by autograd).

    E_θ is dimensionless (a reduced energy of the diffused density, up to a t-dependent constant).
    Each call costs a forward and a backward pass; the gradient graph is kept (``create_graph``)
    whenever grad mode is on, so that the score can be differentiated again: in parameters when
    training, in x for the divergence. Under ``torch.no_grad`` the score comes back detached.
    See ``_ScoreNetworkBase`` for the constructor arguments.
    """

    out_features = 1

    def energy(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """E_θ(x, t) [batch] (dimensionless) at x [batch, dim], t [batch]."""
        alpha = self.schedule.alpha(t)[:, None]
        reference = 0.5 * ((x - alpha * self.loc).pow(2) / self._reference_variance(t)).sum(dim=-1)
        return reference + self._network_output(x, t)[:, 0]

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Score -∇ₓ E_θ(x, t) [batch, dim] (units 1/x) at x [batch, dim], t [batch]."""
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            # A leaf of our own when x is not part of a graph, so that the gradient can be taken.
            x_in = x if x.requires_grad else x.detach().requires_grad_(True)
            (gradient,) = torch.autograd.grad(self.energy(x_in, t).sum(), x_in, create_graph=create_graph)
        return -gradient


def denoising_score_matching_loss(
    model: nn.Module,
    x0: torch.Tensor,
    schedule: VPSchedule,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Denoising score-matching loss with weight λ(t) = σ(t)², a scalar tensor (differentiable).

    For each data point x0 [batch, dim]: t ~ U(t_min, 1), ε ~ N(0, I), x_t = α(t) x0 + σ(t) ε; the score
    of the kernel p(x_t | x0) is -ε / σ(t), so

        loss = mean_batch || σ(t) score(x_t, t) + ε ||²       (summed over dim, dimensionless).

    Its minimizer over all functions is the marginal score ∇ log p_t (Vincent 2011); the minimum is
    not 0. t and ε are drawn from ``generator`` (on its device, then moved to x0's).
    """
    n, dim = x0.shape
    noise_device = generator.device if generator is not None else x0.device
    uniform = torch.rand(n, generator=generator, device=noise_device, dtype=x0.dtype)
    t = schedule.t_min + (1.0 - schedule.t_min) * uniform
    noise = torch.randn(n, dim, generator=generator, device=noise_device, dtype=x0.dtype)
    t, noise = t.to(x0.device), noise.to(x0.device)
    x_t = schedule.alpha(t)[:, None] * x0 + schedule.sigma(t)[:, None] * noise
    residual = schedule.sigma(t)[:, None] * model(x_t, t) + noise
    return residual.pow(2).sum(dim=-1).mean()


#: Gradients are clipped to this total norm: the DSM loss is heavy-tailed in t, and a single batch
#: should not throw the model far away.
MAX_GRAD_NORM = 10.0


def train_score_model(
    model: nn.Module,
    data: torch.Tensor,
    schedule: VPSchedule,
    *,
    steps: int = 2000,
    batch_size: int = 512,
    learning_rate: float = 1e-3,
    seed: int = 0,
    log: Callable[[str], None] = print,
    log_every: int = 100,
    checkpoint_path: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """Fit the score model ``model`` to ``data`` [n, dim] in place by denoising score matching.

    Optimization (``training.train``): Adam with a cosine learning-rate schedule from ``learning_rate``
    down to 0 over ``steps`` steps, gradient norm clipped to ``MAX_GRAD_NORM``; minibatches drawn
    uniformly with replacement. Reproducible on CPU for a given ``seed``: the global RNG is seeded, and
    the minibatch indices (seed + 1) and the diffusion noise t, ε (seed + 2) come from their own seeded
    ``torch.Generator``s.

    Every ``log_every`` steps and at the last step, a record is taken and a line logged with ``log``.
    Returns numpy arrays, one entry per record:

    - ``step``: number of optimizer steps done (int);
    - ``loss``: mean minibatch DSM loss (``denoising_score_matching_loss``) since the previous record;
    - ``learning_rate``: the learning rate used for the recorded step.

    With ``checkpoint_path``, the whole training state (weights, optimizer, schedule, random streams,
    records) is saved there at every record, and a call with the same arguments resumes from it and
    ends bit for bit where an uninterrupted run ends (on the same device); the file is removed at the
    end. A checkpoint written with other arguments is ignored. Without it, no files are touched.

    The model is left in eval mode.
    """
    if getattr(model, "schedule", schedule) != schedule:
        raise ValueError(f"the model was built for {model.schedule}, not {schedule}")
    data = training.training_data(data, model, min_samples=1)
    objective = _DenoisingObjective(model, data, schedule, batch_size, seed)
    settings = [batch_size, schedule.config, *data.shape, float(data.sum())]
    return training.train(model, objective, steps=steps, learning_rate=learning_rate, seed=seed, log=log,
                          log_every=log_every, max_grad_norm=MAX_GRAD_NORM, checkpoint_path=checkpoint_path,
                          checkpoint_settings=settings)


class _DenoisingObjective:
    """The DSM loss on a minibatch (``training.Objective``); records its mean since the previous record."""

    def __init__(self, model: nn.Module, data: torch.Tensor, schedule: VPSchedule, batch_size: int, seed: int):
        self.model, self.data, self.schedule, self.batch_size = model, data, schedule, batch_size
        # Separate streams, so that e.g. a change of batch size does not reuse the index stream as noise.
        self.generators = {"batch": torch.Generator(device=data.device).manual_seed(seed + 1),
                           "noise": torch.Generator(device=data.device).manual_seed(seed + 2)}
        self.loss_sum, self.loss_count = 0.0, 0

    def loss(self) -> torch.Tensor:
        idx = torch.randint(self.data.shape[0], (self.batch_size,), generator=self.generators["batch"],
                            device=self.data.device)
        loss = denoising_score_matching_loss(self.model, self.data[idx], self.schedule, self.generators["noise"])
        self.loss_sum += loss.item()
        self.loss_count += 1
        return loss

    def record(self) -> tuple[dict, str]:
        mean_loss = self.loss_sum / self.loss_count
        self.loss_sum, self.loss_count = 0.0, 0
        return {"loss": mean_loss}, f"DSM loss {mean_loss:.4f}"
