"""Collective variables and the states defined on them (numpy only, for every stage's environment).

A state is a union of disjoint boxes in CV space; a box is a half-open interval [lo, hi) per CV, a missing
CV unbounded. A periodic CV (a dihedral, whose values lie in [-half turn, half turn)) may also be given an
interval with lo > hi in a config: it wraps around, [lo, half turn) ∪ [-half turn, hi). Such a box is split
in two where the state is built (:func:`state_boxes`), so every box of a :class:`State` has lo < hi, and
membership, quadrature and overlap checks need no notion of a period. Dihedral angles follow the IUPAC
sign convention, as ``mdtraj.compute_dihedrals``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: A box in CV space: a half-open interval [lo, hi), lo < hi, per CV.
Box = dict[str, tuple[float, float]]

#: The half period of a dihedral CV in each unit: its values, and states, lie in [-half turn, half turn).
HALF_TURN = {"degrees": 180.0, "radians": math.pi}


@dataclass(frozen=True)
class State:
    """A metastable state: a union of disjoint boxes in CV space, half-open intervals [lo, hi) per CV."""

    name: str
    boxes: tuple[Box, ...]

    def contains(self, cvs: dict[str, np.ndarray]) -> np.ndarray:
        inside = np.zeros(np.shape(next(iter(cvs.values()))), dtype=bool)
        for box in self.boxes:
            inside |= _box_contains(box, cvs)
        return inside


def _box_contains(box: Box, cvs: dict[str, np.ndarray]) -> np.ndarray:
    inside = np.ones(np.shape(next(iter(cvs.values()))), dtype=bool)
    for cv, (lo, hi) in box.items():
        inside &= (cvs[cv] >= lo) & (cvs[cv] < hi)
    return inside


def boxes_overlap(a: Box, b: Box) -> bool:
    # Half-open intervals [lo, hi) overlap iff each starts before the other ends.
    return all(a[cv][0] < b[cv][1] and b[cv][0] < a[cv][1] for cv in a)


class StateError(ValueError):
    """A state is malformed; the message names the key."""


def box_keys(key: str, spec: dict | list) -> list[tuple[str, dict]]:
    """The boxes of a state as a config gives it, with their keys: one box ``{cv: [lo, hi]}`` (``key``)
    or a list of boxes, their union (``key.0``, ``key.1``, ... as the schema names list items)."""
    if isinstance(spec, dict):
        return [(key, spec)]
    return [(f"{key}.{i}", box) for i, box in enumerate(spec)]


def state_boxes(key: str, spec: dict | list, cvs: tuple[str, ...],
                half_turns: dict[str, float] | None = None) -> tuple[Box, ...]:
    """The boxes of a state (a box or a list of boxes), each completed over ``cvs`` and with lo < hi.

    A missing CV is unbounded. ``half_turns`` gives the periodic CVs and their half period: there an
    interval with lo > hi wraps around ±half turn, and its box splits into two. The boxes of one state
    must be disjoint (the quadrature adds their shares of a grid cell). Raises :class:`StateError`.
    """
    per_box = [_split_box(box_key, box, cvs, half_turns or {}) for box_key, box in box_keys(key, spec)]
    for i, first in enumerate(per_box):
        for j in range(i + 1, len(per_box)):
            if any(boxes_overlap(a, b) for a in first for b in per_box[j]):
                raise StateError(f"{key}: boxes {i} and {j} overlap; the boxes of a state must be disjoint")
    return tuple(box for boxes in per_box for box in boxes)


def _split_box(key: str, box: dict, cvs: tuple[str, ...], half_turns: dict[str, float]) -> list[Box]:
    """One box over every CV as boxes with lo < hi: a wrap-around interval doubles them."""
    pieces: list[Box] = [{}]
    for cv in cvs:
        intervals = _ordinary_intervals(f"{key}.{cv}", *box.get(cv, (-math.inf, math.inf)), half_turns.get(cv))
        pieces = [{**piece, cv: interval} for piece in pieces for interval in intervals]
    return pieces


def _ordinary_intervals(key: str, lo, hi, half_turn: float | None) -> list[tuple[float, float]]:
    """[lo, hi) itself, or, for a periodic CV with lo > hi, its non-empty parts on each side of ±half_turn."""
    if lo < hi:
        return [(float(lo), float(hi))]
    if half_turn is None:
        raise StateError(f"{key}: expected [lo, hi] with lo < hi, got {[lo, hi]} (this CV does not wrap around)")
    if lo == hi:
        raise StateError(f"{key}: [lo, hi] with lo == hi is empty, got {[lo, hi]}; expected lo < hi, "
                         f"or lo > hi for an interval that wraps around ±{half_turn:g}")
    parts = [(a, b) for a, b in [(float(lo), half_turn), (-half_turn, float(hi))] if a < b]
    if not parts:
        raise StateError(f"{key}: {[lo, hi]} wraps around ±{half_turn:g} but holds nothing on either side; "
                         f"expected lo > hi with lo < {half_turn:g} or hi > {-half_turn:g}")
    return parts


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
