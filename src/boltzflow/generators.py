"""Boltzmann generators for molecules: a flow over internal coordinates, mapped to Cartesian positions.

The flow (:class:`boltzflow.flows.MixedSplineCouplingFlow`) models the 3n-6 internal coordinates of
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
from boltzflow.flows import MixedSplineCouplingFlow


def zmatrix_state(zmatrix: ZMatrix) -> dict:
    """The Z-matrix as plain lists, so that it can be saved and read with ``torch.load(weights_only=True)``."""
    return {"order": zmatrix.order.tolist(), "references": zmatrix.references.tolist()}


def zmatrix_from_state(state: dict) -> ZMatrix:
    return ZMatrix(order=np.asarray(state["order"], dtype=np.int64),
                   references=np.asarray(state["references"], dtype=np.int64))


class BoltzmannGenerator(nn.Module):
    """A flow over internal coordinates together with the map to Cartesian positions (nm).

    The flow acts on "flow coordinates" y, which are the internal coordinates except for torsions that
    are confined to a narrow range in the data (``window_centre`` finite: the second hydrogen of a
    methyl group measured from the first, a planar amide): those are unwrapped around their circular
    mean c into the real window (c - π, c + π], where a Gaussian base fits them far better than a
    circular spline could. The unwrapping has unit Jacobian; flow samples outside the window do not
    correspond to a torsion one-to-one and are dropped like any other sample outside the map.

    ``sample(n)`` returns Cartesian positions [n, n_atoms, 3] (float64, in the canonical frame: first
    atom at the origin, see ``InternalCoordinates.to_cartesian``) and log q as defined in the module
    docstring. ``reduced_energy_internal(u)`` turns a Cartesian reduced energy into the energy of the
    flow-coordinate density, u(x(ic(y))) - J(ic(y)), which is what the flow is trained against.
    """

    def __init__(self, zmatrix: ZMatrix, flow: MixedSplineCouplingFlow, window_centre=None):
        super().__init__()
        self.zmatrix = zmatrix
        self.coordinates = InternalCoordinates(zmatrix)
        self.flow = flow
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

    def reduced_energy_internal(self, reduced_energy):
        """u_y(y) = u(x(y)) - J(y), for a Cartesian reduced energy u of [B, n_atoms, 3] positions."""
        def energy(y):
            return reduced_energy(self.to_cartesian(y)) - self.log_jacobian(y)
        return energy

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        y, log_q_flow = self.flow.sample(n, generator=generator)
        y = y.to(torch.float64)
        return self.to_cartesian(y), log_q_flow.to(torch.float64) - self.log_jacobian(y)

    @property
    def config(self) -> dict:
        return {"zmatrix": zmatrix_state(self.zmatrix), "flow": self.flow.config}

    @classmethod
    def from_config(cls, config: dict) -> "BoltzmannGenerator":
        return cls(zmatrix_from_state(config["zmatrix"]), MixedSplineCouplingFlow(**config["flow"]))


def _wrap(angle: torch.Tensor) -> torch.Tensor:
    """Angle in (-π, π]."""
    return angle - 2 * math.pi * torch.ceil((angle - math.pi) / (2 * math.pi))
