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

    ``sample(n)`` returns Cartesian positions [n, n_atoms, 3] (float64, in the canonical frame: first
    atom at the origin, see ``InternalCoordinates.to_cartesian``) and log q as defined in the module
    docstring. ``reduced_energy_internal(u)`` turns a Cartesian reduced energy into the energy of the
    internal-coordinate density, u(x(ic)) - J(ic), which is what the flow is trained against.
    """

    def __init__(self, zmatrix: ZMatrix, flow: MixedSplineCouplingFlow):
        super().__init__()
        self.zmatrix = zmatrix
        self.coordinates = InternalCoordinates(zmatrix)
        self.flow = flow

    @property
    def n_atoms(self) -> int:
        return self.coordinates.n_atoms

    def to_internal(self, positions_nm: torch.Tensor) -> torch.Tensor:
        ic, _, _ = self.coordinates.to_internal(positions_nm.to(torch.float64))
        return ic

    def to_cartesian(self, ic: torch.Tensor) -> torch.Tensor:
        x, _ = self.coordinates.to_cartesian(ic.to(torch.float64))
        return x

    def log_jacobian(self, ic: torch.Tensor) -> torch.Tensor:
        """J(ic), NaN where the internal coordinates are outside the domain of the map."""
        ic = ic.to(torch.float64)
        j = self.coordinates.log_jacobian_internal(ic)
        bonds = ic[:, self.coordinates.bond_columns]
        angles = ic[:, self.coordinates.angle_columns]
        valid = (bonds > 0).all(-1) & (angles > 0).all(-1) & (angles < math.pi).all(-1)
        return torch.where(valid, j, torch.full_like(j, math.nan))

    def reduced_energy_internal(self, reduced_energy):
        """u_ic(ic) = u(x(ic)) - J(ic), for a Cartesian reduced energy u of [B, n_atoms, 3] positions."""
        def energy(ic):
            return reduced_energy(self.to_cartesian(ic)) - self.log_jacobian(ic)
        return energy

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        ic, log_q_flow = self.flow.sample(n, generator=generator)
        ic = ic.to(torch.float64)
        return self.to_cartesian(ic), log_q_flow.to(torch.float64) - self.log_jacobian(ic)

    @property
    def config(self) -> dict:
        return {"zmatrix": zmatrix_state(self.zmatrix), "flow": self.flow.config}

    @classmethod
    def from_config(cls, config: dict) -> "BoltzmannGenerator":
        return cls(zmatrix_from_state(config["zmatrix"]), MixedSplineCouplingFlow(**config["flow"]))
