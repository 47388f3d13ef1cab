"""Collective variables and the states defined on them (numpy only, for every stage's environment).

States are boxes in CV space: half-open intervals [lo, hi) per CV, a missing CV unbounded. Dihedral
angles follow the IUPAC sign convention, as ``mdtraj.compute_dihedrals``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StateBox:
    """A metastable state: a box in CV space, half-open intervals [lo, hi) per CV."""

    name: str
    intervals: dict[str, tuple[float, float]]

    def contains(self, cvs: dict[str, np.ndarray]) -> np.ndarray:
        inside = np.ones(len(next(iter(cvs.values()))), dtype=bool)
        for cv, (lo, hi) in self.intervals.items():
            inside &= (cvs[cv] >= lo) & (cvs[cv] < hi)
        return inside


class StateError(ValueError):
    """A state box is malformed; the message names the key."""


def state_box(key: str, box: dict, cvs: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """Complete a state box over ``cvs``: a missing CV is unbounded. Intervals are half-open [lo, hi)."""
    full = {}
    for cv in cvs:
        lo, hi = box.get(cv, (-math.inf, math.inf))
        if not lo < hi:
            raise StateError(f"{key}.{cv}: expected [lo, hi] with lo < hi, got {[lo, hi]}")
        full[cv] = (float(lo), float(hi))
    return full


def dihedral_angles(positions: np.ndarray, quads) -> np.ndarray:
    """Dihedral angles in radians in (-π, π] of atom quadruples (i, j, k, l): [N, n_atoms, 3] → [N, m].

    The angle between the planes i-j-k and j-k-l, from atan2 of its scaled sine and cosine.
    """
    positions = np.asarray(positions, dtype=np.float64)
    quads = np.asarray(quads, dtype=np.int64)
    p0, p1, p2, p3 = (positions[..., quads[:, c], :] for c in range(4))
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n12 = np.cross(b1, b2)
    n23 = np.cross(b2, b3)
    sine = np.linalg.norm(b2, axis=-1) * np.sum(b1 * n23, axis=-1)
    cosine = np.sum(n12 * n23, axis=-1)
    angles = np.arctan2(sine, cosine)
    return np.where(angles <= -np.pi, angles + 2 * np.pi, angles)
