"""Typed settings: every block of a system's config as a frozen dataclass.

Science code receives these objects, never string-keyed dicts. They are built from the schema-validated
config (``boltzflow.config.validate_config`` fills every default first), so a field without a default
here is one the schema always supplies. Each class states the constraints its consumer enforces; the
schema states the same ones (``tests/test_config.py`` builds every class and its consumer from the
schema's minimum and maximum values), so a config the dry run accepts never fails later for a reason
the config could have shown.

This module imports no torch and no OpenMM (numpy only): the analysis stages and the Snakefile use it too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

#: The flow settings that define its architecture (saved with the model); the rest define its training.
FLOW_ARCHITECTURE = ("n_layers", "hidden", "n_hidden_layers", "n_bins", "tail_bound")
#: The score settings that define the network and its diffusion.
SCORE_ARCHITECTURE = ("hidden", "n_hidden_layers", "time_frequencies", "beta_min", "beta_max", "t_min")


def from_block(cls: type[T], block: Mapping[str, Any]) -> T:
    """A settings object from its config block; keys the class does not have are an error (a typo)."""
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(block) - names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no setting {', '.join(unknown)}")
    return cls(**block)


@dataclass(frozen=True)
class FlowSettings:
    """The ``flow`` block: a spline coupling flow and its training: maximum likelihood (optional reverse KL,
    optional early stopping), then an optional energy-based refinement (``refine_steps`` > 0).

    With ``anneal_steps`` > 0 (temperature annealing, after TA-BG): the maximum likelihood is on the MD of the
    hottest ladder temperature, and ``anneal_steps`` steps of importance-weighted refit at each lower ladder
    temperature follow, down to the target (``boltzflow.stages.flow.fit_flow``)."""

    n_layers: int = 8
    hidden: int = 64
    n_hidden_layers: int = 2
    n_bins: int = 8
    tail_bound: float = 5.0
    steps: int = 3000
    batch_size: int = 512
    learning_rate: float = 0.003
    energy_weight: float = 0.0
    energy_batch_size: int = 256
    early_stopping_patience: int = 0
    refine_steps: int = 0
    refine_learning_rate: float = 0.001
    refine_energy_weight: float = 1.0
    refine_energy_batch_size: int = 256
    refine_buffer_weight: float = 0.0
    refine_buffer_samples: int = 2048
    refine_buffer_refresh_every: int = 50
    refine_buffer_size: int = 50000
    anneal_steps: int = 0
    anneal_learning_rate: float = 0.001
    anneal_buffer_samples: int = 4096
    validation_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"

    @property
    def architecture(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FLOW_ARCHITECTURE}


@dataclass(frozen=True)
class SamplingSettings:
    """The ``sampling`` block: how many flow samples to draw, in batches of what size, on which device;
    ``ladder_samples``: draws of a temperature-conditioned flow at each ladder temperature (``flow_ladder``)."""

    n_samples: int = 50000
    batch_size: int = 8192
    seed: int = 0
    device: str = "auto"
    ladder_samples: int = 20000


@dataclass(frozen=True)
class ScoreSettings:
    """The ``score`` block: the score network, its VP diffusion and its denoising score-matching training."""

    parameterization: str = "unconstrained"
    hidden: int = 128
    n_hidden_layers: int = 3
    time_frequencies: int = 8
    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-3
    steps: int = 3000
    batch_size: int = 512
    learning_rate: float = 1e-3
    seed: int = 0
    device: str = "auto"

    @property
    def architecture(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SCORE_ARCHITECTURE}


#: How a score model's sample gets its log-density, and the ``score_sampling`` key of its probe count.
LIKELIHOOD_PROBES = {"exact": None, "hutchinson": "hutchinson_probes", "perturbation": "perturbation_probes",
                     "perturbation_multistep": "perturbation_probes"}


@dataclass(frozen=True)
class ScoreSamplingSettings:
    """The ``score_sampling`` block: probability-flow ODE samples with log q by one likelihood estimator.

    A stage gets only its own estimator's probe count (so that changing the other's does not rerun it):
    the other is None. ``integrator_check_samples`` latents are integrated again at ``ode_steps`` and
    2 × ``ode_steps`` to measure the integrator's error (``boltzflow.integrator_check``; 0 disables it).
    """

    n_samples: int = 20000
    ode_steps: int = 20
    integrator_check_samples: int = 256
    batch_size: int = 2000
    seed: int = 0
    device: str = "auto"
    hutchinson_probes: int | None = None
    perturbation_probes: int | None = None

    def probes(self, likelihood: str) -> int:
        """Probes per sample of ``likelihood`` (1 for the exact divergence, which has none)."""
        key = LIKELIHOOD_PROBES[likelihood]
        return 1 if key is None else getattr(self, key)


@dataclass(frozen=True)
class SMCSettings:
    """The ``smc`` block: latent-space sequential Monte Carlo from a model to the target (``boltzflow.smc``).

    ``score_likelihood`` is the log q estimator a score model uses inside SMC; ``initial_step`` is the
    first pCN step size (adapted from there), not a config key. ``replicates`` independent runs of
    ``n_particles`` each (seeds derived from ``seed``) give the spread that ln Z and ΔF errors come from.
    """

    n_particles: int = 500
    replicates: int = 4
    ess_target: float = 0.8
    resample_threshold: float = 0.5
    moves_per_level: int = 5
    max_levels: int = 100
    score_likelihood: str = "perturbation_multistep"
    seed: int = 0
    initial_step: float = 0.3


@dataclass(frozen=True)
class MCMCSettings:
    """The ``mcmc`` block: independence Metropolis-Hastings over the flow's weighted draws."""

    chains: int = 100
    burn_in: int = 20
    seed: int = 0


@dataclass(frozen=True)
class AnalysisSettings:
    """The ``analysis`` block: histogram bins, bootstrap replicates and seed, trimmed-ESS fraction, the
    thresholds of the reliability verdict (``reliability.verdict``) and the common sample count of the
    KL/JS divergences."""

    bins: int = 50
    bootstrap: int = 200
    seed: int = 0
    trim_fraction: float = 0.002
    max_pareto_k: float = 0.7
    min_ess: float = 50.0
    min_state_ess: float = 20.0
    max_integrator_error_fraction: float = 0.5
    divergence_samples: int = 500
    divergence_repeats: int = 10


@dataclass(frozen=True)
class SampleTrajectorySettings:
    """The ``sample_trajectories`` block of a molecule: its model samples as AMBER trajectories.

    ``resampled_frames`` frames are drawn with replacement by the normalized importance weights
    (``estimators.draw_by_weight``), with ``seed``: an equally weighted ensemble to look at.
    """

    resampled_frames: int = 10000
    seed: int = 0


@dataclass(frozen=True)
class FigureSettings:
    """The top-level ``figures`` block.

    ``min_bin_effective_samples``: profile points and surface bins of an estimator with fewer effective
    samples than this are not drawn (a handful of samples makes spikes, not free energies).
    """

    style: str = "ticks"
    max_kt: float = 10.0
    min_bin_effective_samples: float = 5.0


@dataclass(frozen=True)
class LangevinSettings:
    """The ``md`` block of a toy: Langevin walkers at one temperature; units in the names.

    ``seed`` must be a positive int (OpenMM treats 0 as 'random').
    """

    walkers: int = 256
    steps: int = 20000
    equilibration_steps: int = 2000
    report_interval: int = 50
    timestep_fs: float = 10.0
    friction_per_ps: float = 1.0
    mass_amu: float = 1.0
    z_spring_kj_mol_nm2: float = 1000.0
    platform: str = "Reference"
    seed: int = 1

    @classmethod
    def from_config(cls, md_config: dict) -> LangevinSettings:
        """The settings of an ``md`` block, ignoring keys that are not Langevin settings."""
        return cls(**{name: md_config[name] for name in cls.__dataclass_fields__ if name in md_config})


@dataclass(frozen=True)
class ReplicaExchangeSettings:
    """The ``md`` block of a molecule: a replica exchange run; units in the names.

    ``exchanges`` and ``equilibration_exchanges`` count exchange attempts (each after
    ``steps_per_exchange`` steps of every replica); nothing is recorded during equilibration.
    ``seed`` must be a positive int (OpenMM treats 0 as 'random'). ``runs`` independent runs (one job
    each, so they run in parallel) are pooled; run 1 uses ``seed``, the others seeds derived from it
    (:func:`boltzflow.replica_exchange.run_seed`).
    """

    steps_per_exchange: int = 500
    exchanges: int = 2000
    equilibration_exchanges: int = 100
    report_interval: int = 100
    timestep_fs: float = 2.0
    friction_per_ps: float = 1.0
    seed: int = 1
    runs: int = 1
    platform: str = "Reference"
    platform_properties: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("steps_per_exchange", "exchanges", "report_interval", "seed", "runs"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not _is_int(self.equilibration_exchanges) or self.equilibration_exchanges < 0:
            raise ValueError(f"equilibration_exchanges must be an int >= 0, got {self.equilibration_exchanges!r}")
        if self.steps_per_exchange % self.report_interval:
            raise ValueError(f"report_interval ({self.report_interval}) must divide "
                             f"steps_per_exchange ({self.steps_per_exchange})")
        if not self.timestep_fs > 0:
            raise ValueError(f"timestep_fs must be > 0, got {self.timestep_fs!r}")
        # Without friction the integrator does not thermostat, and the states would not be temperatures.
        if not self.friction_per_ps > 0:
            raise ValueError(f"friction_per_ps must be > 0, got {self.friction_per_ps!r}")
        if not isinstance(self.platform, str) or not self.platform:
            raise ValueError(f"platform must be a platform name, got {self.platform!r}")
        if not isinstance(self.platform_properties, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.platform_properties.items()):
            raise ValueError(f"platform_properties must map str to str, got {self.platform_properties!r}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


#: The settings class of every model and analysis block of a system's config, by block name (molecules
#: alone have ``sample_trajectories``). The ``md`` block's class depends on the system kind:
#: ``Target.md_settings`` builds it.
SYSTEM_BLOCKS: dict[str, type] = {
    "flow": FlowSettings,
    "sampling": SamplingSettings,
    "score": ScoreSettings,
    "score_sampling": ScoreSamplingSettings,
    "smc": SMCSettings,
    "mcmc": MCMCSettings,
    "analysis": AnalysisSettings,
    "sample_trajectories": SampleTrajectorySettings,
}
