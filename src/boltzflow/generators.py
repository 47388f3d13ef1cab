"""Generators: a model over a system's model coordinates together with the map back to its positions.

Every generator is a model (a flow, or a score model sampled by the probability-flow ODE) plus a
:class:`CoordinateMap`: the identity for a toy (:class:`CartesianMap`, x and y in nm), internal
coordinates for a molecule (:class:`InternalCoordinateMap`). Generators and the stages that use them see
only that interface; log q of a sample is the model's density of its model coordinates minus the map's
log-Jacobian (0 for toys).

For a molecule (a Boltzmann generator), the flow (:class:`boltzflow.flows.MixedSplineCouplingFlow`)
models the 3n-6 internal coordinates of
:class:`boltzflow.coordinates.InternalCoordinates`: bond lengths and angles as real numbers, torsions as
angles on the circle. The global frame (3 translations, 3 rotations) is not modelled: the Boltzmann
density is uniform over rigid-body motions, so the marginal density of the internal coordinates is

    p(ic) ∝ exp(-u(x(ic)) + J(ic)),    J = log_jacobian_internal(ic) = Σ 2 ln r + ln sin θ,

(the frame integrates out to the constant 8π² V). Every sample therefore carries

    log q = log q_flow(ic) - J(ic)    and    log w = -u(x) - log q,

the same convention as the toy systems, where ln Z is the partition function over internal coordinates.
Samples whose internal coordinates leave the domain of the map (a bond ≤ 0 or an angle outside (0, π),
where the map is not one-to-one) get log q = NaN, and so zero weight, and are counted.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from boltzflow.coordinates import InternalCoordinates, ZMatrix
from boltzflow.flows import MixedSplineCouplingFlow, SplineCouplingFlow
from boltzflow.settings import LIKELIHOOD_PROBES


def zmatrix_state(zmatrix: ZMatrix) -> dict:
    """The Z-matrix as plain lists, so that it can be saved and read with ``torch.load(weights_only=True)``."""
    return {"order": zmatrix.order.tolist(), "references": zmatrix.references.tolist()}


def zmatrix_from_state(state: dict) -> ZMatrix:
    return ZMatrix(order=np.asarray(state["order"], dtype=np.int64),
                   references=np.asarray(state["references"], dtype=np.int64))


class CoordinateMap(nn.Module):
    """Model coordinates y (what a model learns, float64) ↔ a system's positions (nm), with the log-Jacobian
    J(y) = ln |det ∂x/∂y| of the map where it is defined (NaN outside its domain).

    Generators and stages see only this interface, so they never ask which kind of system they serve.
    Subclasses define ``model_coordinates``, ``to_cartesian``, ``log_jacobian`` and ``config``.
    """

    def reduced_energy_internal(self, reduced_energy):
        """u_y(y) = u(x(y)) - J(y): the energy of the model-coordinate density, for a reduced energy u of
        positions."""
        def energy(y):
            return reduced_energy(self.to_cartesian(y)) - self.log_jacobian(y)
        return energy


class CartesianMap(CoordinateMap):
    """The coordinate map of a system whose positions are its model coordinates (a toy's x and y, nm):
    the identity, with log-Jacobian 0."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)

    def model_coordinates(self, positions: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(positions).to(torch.float64)

    def to_cartesian(self, y: torch.Tensor) -> torch.Tensor:
        return y.to(torch.float64)

    def log_jacobian(self, y: torch.Tensor) -> torch.Tensor:
        return torch.zeros(y.shape[0], dtype=torch.float64, device=y.device)

    @property
    def config(self) -> dict:
        return {"type": "cartesian", "dim": self.dim}


class InternalCoordinateMap(CoordinateMap):
    """Internal coordinates as real "model coordinates" y, mapped to Cartesian positions (nm).

    y are the internal coordinates except for torsions with a finite ``window_centre`` c: those are
    unwrapped into the real window (c - π, c + π]. The unwrapping has unit Jacobian; model samples
    outside the window do not correspond to a torsion one-to-one and are dropped like any other sample
    outside the map (``log_jacobian`` is NaN there).
    """

    def __init__(self, zmatrix: ZMatrix, window_centre=None):
        super().__init__()
        self.zmatrix = zmatrix
        self.coordinates = InternalCoordinates(zmatrix)
        dim = self.coordinates.dim
        centre = torch.full((dim,), math.nan, dtype=torch.float64) if window_centre is None else \
            torch.as_tensor(window_centre, dtype=torch.float64).clone()
        self.register_buffer("window_centre", centre)

    @property
    def n_atoms(self) -> int:
        return self.coordinates.n_atoms

    @property
    def windowed(self) -> torch.Tensor:
        return torch.isfinite(self.window_centre)

    def to_internal(self, positions_nm: torch.Tensor) -> torch.Tensor:
        ic, _, _ = self.coordinates.to_internal(positions_nm.to(torch.float64))
        return ic

    def model_coordinates(self, positions_nm: torch.Tensor) -> torch.Tensor:
        """y of Cartesian positions [n, n_atoms, 3] (nm), float64."""
        return self.flow_coordinates(self.to_internal(torch.as_tensor(positions_nm)))

    def flow_coordinates(self, ic: torch.Tensor) -> torch.Tensor:
        """y from internal coordinates: windowed torsions unwrapped into (c - π, c + π]."""
        centre = torch.nan_to_num(self.window_centre)
        unwrapped = centre - _wrap(centre - ic)
        return torch.where(self.windowed, unwrapped, ic)

    def internal_coordinates(self, y: torch.Tensor) -> torch.Tensor:
        return torch.where(self.windowed, _wrap(y), y)

    def to_cartesian(self, y: torch.Tensor) -> torch.Tensor:
        x, _ = self.coordinates.to_cartesian(self.internal_coordinates(y.to(torch.float64)))
        return x

    def log_jacobian(self, y: torch.Tensor) -> torch.Tensor:
        """J(ic(y)), NaN where y is outside the domain of the map (a bond ≤ 0, an angle outside (0, π),
        a windowed torsion outside its window)."""
        y = y.to(torch.float64)
        ic = self.internal_coordinates(y)
        j = self.coordinates.log_jacobian_internal(ic)
        bonds = ic[:, self.coordinates.bond_columns]
        angles = ic[:, self.coordinates.angle_columns]
        distance = torch.where(self.windowed, (y - torch.nan_to_num(self.window_centre)).abs(), torch.zeros_like(y))
        valid = ((bonds > 0).all(-1) & (angles > 0).all(-1) & (angles < math.pi).all(-1)
                 & (distance < math.pi).all(-1))
        return torch.where(valid, j, torch.full_like(j, math.nan))

    @property
    def config(self) -> dict:
        """The Z-matrix (the window centres are a buffer, saved with the state dict)."""
        return {"type": "internal", **zmatrix_state(self.zmatrix)}


#: How each kind of coordinate map is rebuilt from its saved ``config``.
COORDINATE_MAPS = {"cartesian": lambda config: CartesianMap(config["dim"]),
                   "internal": lambda config: InternalCoordinateMap(zmatrix_from_state(config))}


def coordinate_map_from_config(config: dict) -> CoordinateMap:
    """A coordinate map from its ``config`` (window centres come with the state dict)."""
    return COORDINATE_MAPS[config["type"]](config)


#: Flow classes a generator file may name (``torch.load(weights_only=True)`` reads names, not classes).
FLOW_CLASSES = {cls.__name__: cls for cls in (SplineCouplingFlow, MixedSplineCouplingFlow)}


class FlowGenerator(nn.Module):
    """A flow over a system's model coordinates together with the map to its positions.

    For a toy the map is the identity (:class:`CartesianMap`); for a molecule it is an
    :class:`InternalCoordinateMap` and the flow acts on "flow coordinates" y: the internal coordinates,
    except for torsions that are confined to a narrow range in the data (``window_centre`` finite: the
    second hydrogen of a methyl group measured from the first, a planar amide), which are unwrapped
    around their circular mean c into the real window (c - π, c + π], where a Gaussian base fits them far
    better than a circular spline could.

    ``sample(n)`` returns positions (float64; molecules: Cartesian [n, n_atoms, 3] in the canonical frame,
    first atom at the origin, see ``InternalCoordinates.to_cartesian``) and log q as defined in the module
    docstring.
    """

    def __init__(self, coordinate_map: CoordinateMap, flow: nn.Module):
        super().__init__()
        self.coordinate_map = coordinate_map
        self.flow = flow

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        y, log_q_flow = self.flow.sample(n, generator=generator)
        return self.output(y, log_q_flow)

    def output(self, y: torch.Tensor, log_q_flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow coordinates and their flow log-density → (positions, log q), float64."""
        y = y.to(torch.float64)
        return self.coordinate_map.to_cartesian(y), log_q_flow.to(torch.float64) - self.coordinate_map.log_jacobian(y)

    @property
    def config(self) -> dict:
        return {"map": self.coordinate_map.config, "flow_class": type(self.flow).__name__, "flow": self.flow.config}

    @classmethod
    def from_config(cls, config: dict) -> FlowGenerator:
        return cls(coordinate_map_from_config(config["map"]), FLOW_CLASSES[config["flow_class"]](**config["flow"]))


def boltzmann_generator(zmatrix: ZMatrix, flow: nn.Module | None, window_centre=None) -> FlowGenerator:
    """A flow over the internal coordinates of a molecule (a :class:`FlowGenerator` with that map)."""
    return FlowGenerator(InternalCoordinateMap(zmatrix, window_centre), flow)


def _wrap(angle: torch.Tensor) -> torch.Tensor:
    """Angle in (-π, π]."""
    return angle - 2 * math.pi * torch.ceil((angle - math.pi) / (2 * math.pi))


# ---------------------------------------------------------------- latent-space views of every model
#
# Samplers that move particles in latent space (sequential Monte Carlo, ``boltzflow.smc``) need each
# model as a deterministic map from standard-normal latent noise ξ [n, latent_dim] to a sample and its
# log-density: ``decode(ξ) -> (x, log q)``, x [n, 2] for a toy system or [n, n_atoms, 3] (nm) for a
# molecule, log q [n] in float64 (NaN where a sample leaves the coordinate map).


class FlowLatent:
    """A trained :class:`FlowGenerator` as a map from ξ ~ N(0, I).

    Gaussian base coordinates are ξ itself; circular ones (uniform on the circle) are 2π Φ(ξ) - π, with Φ
    the standard normal CDF, which maps N(0, 1) onto the uniform base exactly.
    """

    def __init__(self, model: FlowGenerator):
        self.model = model
        self.flow = model.flow
        self.latent_dim = self.flow.dim

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flow = self.flow
        latent = latent.to(device=flow.loc.device, dtype=torch.float64)
        z = latent.to(flow.loc.dtype)
        if hasattr(flow, "circular_idx") and flow.circular_idx.numel():
            # In float64 (a float32 CDF rounds to 1 above ξ ≈ 5.3), and π itself wrapped to -π as in sample_base.
            angles = _wrap(2.0 * math.pi * torch.special.ndtr(latent[:, flow.circular_idx]) - math.pi)
            z = z.index_copy(1, flow.circular_idx, angles.to(z.dtype))
        y, log_det = flow.forward(z)
        return self.model.output(y, flow.base_log_prob(z) - log_det)


#: How a score model's sample gets its log-density (see ``ScoreGenerator.decode``).
LIKELIHOODS = tuple(LIKELIHOOD_PROBES)


class ScoreGenerator(nn.Module):
    """A score model over standardized model coordinates, sampled by the probability-flow ODE.

    The score network sees s = (y - loc) / scale, where y are the system's model coordinates: x and y
    of a toy system, or the internal coordinates of an ``InternalCoordinateMap`` (every torsion unwrapped
    into a window, so that all coordinates are real). Standardizing first matters: a VP diffusion in nm
    would drown bond lengths (spread 0.003 nm) in its t_min blur. log q of a sample is

        log q = log q_s(s) - Σ log scale  [- J(y) for molecules, as for the Boltzmann generator],

    with log q_s from the ODE by one of ``LIKELIHOODS``.
    """

    def __init__(self, network: nn.Module, loc: torch.Tensor, scale: torch.Tensor,
                 coordinate_map: CoordinateMap):
        super().__init__()
        self.network = network
        self.register_buffer("loc", torch.as_tensor(loc, dtype=torch.float64).clone())
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float64).clone())
        self.coordinate_map = coordinate_map

    @property
    def dim(self) -> int:
        return self.network.dim

    @property
    def schedule(self):
        return self.network.schedule

    def standardize(self, y: torch.Tensor) -> torch.Tensor:
        return (y.to(torch.float64) - self.loc) / self.scale

    def model_coordinates(self, positions: torch.Tensor) -> torch.Tensor:
        """y of MD positions (toy: [n, 2]; molecule: Cartesian [n, n_atoms, 3] → internal)."""
        return self.coordinate_map.model_coordinates(positions)

    def latent_dim(self, likelihood: str, n_steps: int, n_probes: int) -> int:
        """ξ holds the prior draw z, and for flow perturbation its probes as well."""
        if likelihood == "perturbation":
            return self.dim * (1 + n_probes)
        if likelihood == "perturbation_multistep":
            return self.dim * (1 + n_steps * n_probes)
        return self.dim

    @torch.no_grad()
    def decode(self, latent: torch.Tensor, likelihood: str, n_steps: int, n_probes: int = 1,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, log q) from latent ξ [n, latent_dim]; ``generator`` draws the Hutchinson probes."""
        from functools import partial

        from boltzflow.perturbation import perturbation_sample, probe_shape
        from boltzflow.probability_flow import (
            exact_divergence,
            hutchinson_divergence,
            integrate_probability_flow,
            standard_normal_log_prob,
        )

        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")
        dtype = self.network.loc.dtype
        latent = latent.to(device=self.loc.device, dtype=dtype)
        n, dim = latent.shape[0], self.dim
        z = latent[:, :dim]
        if likelihood in ("perturbation", "perturbation_multistep"):
            multistep = likelihood == "perturbation_multistep"
            probes = latent[:, dim:].reshape(n, -1, dim).transpose(0, 1)  # [n_probes (x steps), n, dim]
            probes = probes.reshape(probe_shape(n_steps, n_probes, n, dim, multistep))
            s, log_q_s = perturbation_sample(self.network, self.schedule, z, probes, n_steps, multistep)
        else:
            divergence = exact_divergence if likelihood == "exact" else partial(
                hutchinson_divergence, n_probes=n_probes, generator=generator)
            s, integral = integrate_probability_flow(self.network, self.schedule, z, 1.0, self.schedule.t_min,
                                                     n_steps, divergence)
            log_q_s = standard_normal_log_prob(z) - integral
        return self.output(s.to(torch.float64), log_q_s.to(torch.float64))

    def output(self, s: torch.Tensor, log_q_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardized samples and their log-density → (positions, log q) in the system's coordinates."""
        y = self.loc + self.scale * s
        log_q = log_q_s - torch.log(self.scale).sum()
        return self.coordinate_map.to_cartesian(y), log_q - self.coordinate_map.log_jacobian(y)

    @property
    def config(self) -> dict:
        return {"network": type(self.network).__name__, "network_config": self.network.config,
                "map": self.coordinate_map.config}

    @classmethod
    def from_config(cls, config: dict) -> ScoreGenerator:
        from boltzflow import scores

        network = getattr(scores, SCORE_NETWORKS[config["network"]])(**config["network_config"])
        dim = network.dim
        return cls(network, torch.zeros(dim), torch.ones(dim), coordinate_map_from_config(config["map"]))


#: Config name of each score parameterization → its class in ``boltzflow.scores`` (and back by class name).
SCORE_NETWORKS = {"unconstrained": "UnconstrainedScore", "conservative": "ConservativeScore",
                  "UnconstrainedScore": "UnconstrainedScore", "ConservativeScore": "ConservativeScore"}
