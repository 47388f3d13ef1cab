"""Internal coordinates (Z-matrix) of a molecule: bonds, angles and torsions, with exact log-Jacobians.

A Boltzmann generator for a molecule models the 3n-6 internal coordinates instead of the 3n Cartesian
ones: they are invariant to rigid motions, and the torsions, the slow degrees of freedom, become
single (circular) coordinates. This module provides

- :func:`build_zmatrix`: a placement order and reference atoms from the bond graph;
- :class:`InternalCoordinates`: the bijection x <-> (ic, frame) and its log|det|, in torch;
- :func:`dihedral_angles` / :func:`dihedral_angles_torch`: dihedral angles of atom quadruples
  (e.g. the backbone phi/psi collective variables).

Conventions:

- lengths in nm, angles in radians;
- bond angles in [0, pi]; dihedral angles (torsions) in (-pi, pi], IUPAC sign convention (the same as
  ``mdtraj.compute_dihedrals``): looking along the middle bond j->k of (i, j, k, l), the angle is
  positive when the near bond (j->i) must be turned clockwise to eclipse the far one (k->l);
- all log-Jacobians are natural logarithms of absolute determinants with respect to the Lebesgue
  measure in those units.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from boltzflow.cvs import dihedral_angles as numpy_dihedral_angles

#: Marker in :attr:`ZMatrix.references` for a reference the atom does not have (the first three
#: atoms are placed by the global frame, not by a bond/angle/torsion triple).
NO_REFERENCE = -1


# ----------------------------------------------------------------------------------------------------
# Z-matrix construction
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ZMatrix:
    """Placement order and reference atoms of a Z-matrix.

    Attributes:
        order: int array [n_atoms], the atom indices in placement order; ``order[0:3]`` are the atoms
            a0, a1, a2 placed by the global frame.
        references: int array [n_atoms, 3], row p gives the references (j, k, l) of atom ``order[p]``:
            the atom is at bond length |x_i - x_j|, bond angle i-j-k and torsion i-j-k-l.
            Row 0 (a0) has no references; row 1 (a1) has j = a0; row 2 (a2) has j = the atom it is
            bonded to (a1 or a0) and k = the other one. Missing entries are ``NO_REFERENCE`` (-1).
            Every reference is placed earlier than the atom that uses it, and j, k, l are distinct.

    The arrays are read-only, so a ZMatrix can be shared safely.
    """

    order: np.ndarray
    references: np.ndarray

    def __post_init__(self):
        order = np.array(self.order, dtype=np.int64)
        references = np.array(self.references, dtype=np.int64)
        n_atoms = len(order)
        if n_atoms < 3 or references.shape != (n_atoms, 3):
            raise ValueError(
                f"ZMatrix needs >= 3 atoms and references of shape [n_atoms, 3]; got order of length "
                f"{n_atoms} and references of shape {references.shape}"
            )
        if sorted(order.tolist()) != list(range(n_atoms)):
            raise ValueError("ZMatrix order must be a permutation of range(n_atoms)")
        order.setflags(write=False)
        references.setflags(write=False)
        object.__setattr__(self, "order", order)
        object.__setattr__(self, "references", references)

    @property
    def n_atoms(self) -> int:
        return len(self.order)

    @property
    def bond_pairs(self) -> np.ndarray:
        """[n-1, 2] atom pairs (i, j) whose distances are the bond columns of ``ic``, in that order."""
        rows = range(1, self.n_atoms)
        return np.array([(self.order[p], self.references[p, 0]) for p in rows], dtype=np.int64)

    @property
    def angle_triples(self) -> np.ndarray:
        """[n-2, 3] atom triples (i, j, k), vertex j, whose angles are the angle columns of ``ic``."""
        rows = range(2, self.n_atoms)
        return np.array([(self.order[p], *self.references[p, :2]) for p in rows], dtype=np.int64)

    @property
    def torsion_quads(self) -> np.ndarray:
        """[n-3, 4] atom quadruples (i, j, k, l) whose dihedrals are the torsion columns of ``ic``."""
        rows = range(3, self.n_atoms)
        quads = [(self.order[p], *self.references[p]) for p in rows]
        return np.array(quads, dtype=np.int64).reshape(-1, 4)


def _adjacency(bonds: Iterable[Sequence[int]], n_atoms: int) -> list[list[int]]:
    neighbours: list[set[int]] = [set() for _ in range(n_atoms)]
    for bond in bonds:
        i, j = (int(a) for a in bond)
        if not (0 <= i < n_atoms and 0 <= j < n_atoms) or i == j:
            raise ValueError(f"invalid bond ({i}, {j}) for a molecule of {n_atoms} atoms")
        neighbours[i].add(j)
        neighbours[j].add(i)
    return [sorted(s) for s in neighbours]


def _graph_distances(neighbours: list[list[int]], source: int) -> np.ndarray:
    """Number of bonds from ``source`` to every atom (-1 where unreachable)."""
    distance = np.full(len(neighbours), -1, dtype=np.int64)
    distance[source] = 0
    queue = deque([source])
    while queue:
        atom = queue.popleft()
        for other in neighbours[atom]:
            if distance[other] < 0:
                distance[other] = distance[atom] + 1
                queue.append(other)
    return distance


def build_zmatrix(
    bonds: Iterable[Sequence[int]], n_atoms: int, heavy: Sequence[bool] | None = None,
    sibling_torsions: bool = True,
) -> ZMatrix:
    """Build a deterministic Z-matrix from a molecule's bond graph.

    Args:
        bonds: pairs (i, j) of bonded atom indices; the graph must be connected.
        n_atoms: number of atoms (>= 3).
        heavy: optional, True for non-hydrogen atoms. Heavy atoms are placed first and preferred as
            references, so that hydrogen torsions are measured against heavy-atom frames (which makes
            them, e.g. methyl rotations, well-defined single coordinates). None treats all atoms alike.

    The first atom a0 is the heavy atom closest to the graph centre (smallest bond-count distance to
    the farthest heavy atom); a1 is a bonded neighbour of a0 and a2 a neighbour of a1 (or, failing
    that, of a0). Each later atom i gets references (j, k, l) forming a bonded chain i-j-k-l (a proper
    torsion) where one exists among the placed atoms; otherwise l is any placed atom bonded to j or k
    (an improper-style reference).

    With ``sibling_torsions`` (the default), an atom whose bond partner j already carries a placed
    neighbour s other than k (a sibling: the second and third hydrogen of a methyl group, or CB after
    C on CA) is measured from it instead, as the torsion i-j-k-s. That angle is nearly fixed by the
    local geometry (about ±120°), so the rotation of a whole group is one coordinate (the first
    sibling's proper torsion) rather than several that move together, which is far easier for a flow.

    Raises:
        ValueError: fewer than 3 atoms, an invalid bond, or a disconnected graph.
    """
    if n_atoms < 3:
        raise ValueError(f"a Z-matrix needs at least 3 atoms, got {n_atoms}")
    neighbours = _adjacency(bonds, n_atoms)
    is_heavy = np.ones(n_atoms, dtype=bool) if heavy is None else np.asarray(heavy, dtype=bool)
    if is_heavy.shape != (n_atoms,):
        raise ValueError(f"heavy must have one entry per atom ({n_atoms}), got shape {is_heavy.shape}")
    if not is_heavy.any():
        is_heavy = np.ones(n_atoms, dtype=bool)

    distances = np.stack([_graph_distances(neighbours, a) for a in range(n_atoms)])
    if (distances < 0).any():
        n_reached = int((distances[0] >= 0).sum())
        raise ValueError(
            f"bond graph is disconnected: atom 0 reaches only {n_reached} of {n_atoms} atoms"
        )

    def n_heavy_neighbours(atom: int, excluding: int = NO_REFERENCE) -> int:
        return sum(bool(is_heavy[b]) for b in neighbours[atom] if b != excluding)

    # a0: graph centre with respect to the heavy atoms; ties go to the better-connected atom.
    eccentricity = distances[:, is_heavy].max(axis=1)
    a0 = min(
        np.flatnonzero(is_heavy),
        key=lambda a: (eccentricity[a], -n_heavy_neighbours(a), a),
    )
    a0 = int(a0)
    # a1 and a2: heavy, and with heavy neighbours of their own, so the first frame is a heavy one.
    a1 = min(
        neighbours[a0],
        key=lambda a: (not is_heavy[a], len(neighbours[a]) < 2, -n_heavy_neighbours(a, a0), a),
    )
    a2_candidates = [a for a in neighbours[a1] if a != a0]
    a2_partner, a2_other = a1, a0
    if not a2_candidates:
        a2_candidates = [a for a in neighbours[a0] if a != a1]
        a2_partner, a2_other = a0, a1
    a2 = min(a2_candidates, key=lambda a: (not is_heavy[a], -n_heavy_neighbours(a), a))

    order = [a0, a1, a2]
    references = [
        (NO_REFERENCE, NO_REFERENCE, NO_REFERENCE),
        (a0, NO_REFERENCE, NO_REFERENCE),
        (a2_partner, a2_other, NO_REFERENCE),
    ]
    position = {a0: 0, a1: 1, a2: 2}  # atom -> placement index
    from_a0 = distances[a0]

    while len(order) < n_atoms:
        frontier = [
            a for a in range(n_atoms)
            if a not in position and any(b in position for b in neighbours[a])
        ]
        # Heavy atoms first (breadth-first from a0), so hydrogens find heavy references later.
        atom = min(frontier, key=lambda a: (not is_heavy[a], from_a0[a], a))
        references.append(_choose_references(atom, neighbours, position, is_heavy, sibling_torsions))
        position[atom] = len(order)
        order.append(atom)

    return ZMatrix(order=np.array(order), references=np.array(references))


def _choose_references(
    atom: int, neighbours: list[list[int]], position: dict[int, int], is_heavy: np.ndarray,
    sibling_torsions: bool = True,
) -> tuple[int, int, int]:
    """References (j, k, l) for ``atom`` among the placed atoms (keys of ``position``).

    Ranked by: a sibling reference (l bonded to j) first if ``sibling_torsions``, else a proper torsion
    chain first; then fewest hydrogen references (k and j heavy), then earliest placed.
    """
    candidates = []
    for j in neighbours[atom]:
        if j not in position:
            continue
        for k in neighbours[j]:
            if k not in position:
                continue
            # l bonded to k gives a proper torsion; l bonded to j is the improper fallback.
            for l_atom, proper in [(b, True) for b in neighbours[k]] + [(b, False) for b in neighbours[j]]:
                if l_atom not in position or l_atom in (j, k):
                    continue
                n_hydrogens = sum(not is_heavy[r] for r in (j, k, l_atom))
                first = proper if not sibling_torsions else not proper
                rank = (not first, n_hydrogens, position[j], position[k], position[l_atom])
                candidates.append((rank, (j, k, l_atom)))
    if not candidates:
        # Unreachable for a connected placed set of >= 3 atoms; kept as a clear failure mode.
        raise ValueError(f"no placed reference atoms for atom {atom}")
    return min(candidates)[1]


# ----------------------------------------------------------------------------------------------------
# Geometry primitives (torch, batched over leading dimensions)
# ----------------------------------------------------------------------------------------------------


def _wrap_to_half_open(angle: torch.Tensor) -> torch.Tensor:
    """Map atan2's closed range [-pi, pi] to (-pi, pi] (only -pi itself moves)."""
    return torch.where(angle <= -math.pi, angle + 2 * math.pi, angle)


def _bond_angles(x_i: torch.Tensor, x_j: torch.Tensor, x_k: torch.Tensor) -> torch.Tensor:
    """Angle i-j-k at vertex j, in [0, pi]; atan2 keeps it accurate (and differentiable) near 0 and
    pi, where acos is not."""
    a = x_i - x_j
    b = x_k - x_j
    return torch.atan2(torch.linalg.vector_norm(torch.linalg.cross(a, b, dim=-1), dim=-1), (a * b).sum(-1))


def dihedral_angles_torch(positions: torch.Tensor, quads: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Dihedral angles of atom quadruples, in radians in (-pi, pi] (IUPAC sign, as mdtraj).

    Args:
        positions: [..., n_atoms, 3] coordinates (any length unit).
        quads: int [m, 4] atom indices (i, j, k, l); the angle is between planes i-j-k and j-k-l.

    Returns:
        [..., m] dihedral angles.
    """
    quads = torch.as_tensor(quads, dtype=torch.long, device=positions.device)
    p0, p1, p2, p3 = (positions[..., quads[:, c], :] for c in range(4))
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n12 = torch.linalg.cross(b1, b2, dim=-1)
    n23 = torch.linalg.cross(b2, b3, dim=-1)
    # sin and cos of the angle between the plane normals, both scaled by |b1 x b2||b2 x b3||b2|.
    sine = torch.linalg.vector_norm(b2, dim=-1) * (b1 * n23).sum(-1)
    cosine = (n12 * n23).sum(-1)
    return _wrap_to_half_open(torch.atan2(sine, cosine))


def dihedral_angles(positions, quads):
    """Dihedral angles of atom quadruples, in radians in (-pi, pi], same convention as
    ``mdtraj.compute_dihedrals``.

    Args:
        positions: [N, n_atoms, 3] coordinates, numpy array (or torch tensor, then the result is a
            tensor computed by :func:`dihedral_angles_torch`, differentiable).
        quads: int [m, 4] atom indices (i, j, k, l).

    Returns:
        [N, m] dihedral angles, numpy float64 for numpy input.
    """
    if isinstance(positions, torch.Tensor):
        return dihedral_angles_torch(positions, quads)
    return numpy_dihedral_angles(positions, quads)


# ----------------------------------------------------------------------------------------------------
# The bijection x <-> (ic, frame)
# ----------------------------------------------------------------------------------------------------


def _frame_axes(polar: torch.Tensor, azimuth: torch.Tensor):
    """Unit bond direction u and two unit vectors perpendicular to it (e_polar, e_azimuth).

    These are the spherical-coordinate unit vectors, so the a2 rotation angle is measured from the
    direction of increasing polar angle towards increasing azimuth: a right-handed (e_polar,
    e_azimuth, u) frame that is smooth everywhere except at the poles (a set of measure zero).
    """
    sin_p, cos_p = torch.sin(polar), torch.cos(polar)
    sin_a, cos_a = torch.sin(azimuth), torch.cos(azimuth)
    u = torch.stack([sin_p * cos_a, sin_p * sin_a, cos_p], dim=-1)
    e_polar = torch.stack([cos_p * cos_a, cos_p * sin_a, -sin_p], dim=-1)
    e_azimuth = torch.stack([-sin_a, cos_a, torch.zeros_like(sin_a)], dim=-1)
    return u, e_polar, e_azimuth


def _place_atom(x_j, x_k, x_l, bond, angle, torsion):
    """Position of atom i from its references (natural extension reference frame, NeRF): |i - j| =
    bond, angle i-j-k = angle, dihedral i-j-k-l = torsion. Batched over the leading dimension."""
    along = x_j - x_k
    along = along / torch.linalg.vector_norm(along, dim=-1, keepdim=True)
    normal = torch.linalg.cross(x_k - x_l, along, dim=-1)
    normal = normal / torch.linalg.vector_norm(normal, dim=-1, keepdim=True)
    in_plane = torch.linalg.cross(normal, along, dim=-1)
    bond, angle, torsion = bond.unsqueeze(-1), angle.unsqueeze(-1), torsion.unsqueeze(-1)
    sin_angle = torch.sin(angle)
    return x_j + bond * (
        -torch.cos(angle) * along
        + sin_angle * torch.cos(torsion) * in_plane
        + sin_angle * torch.sin(torsion) * normal
    )


class InternalCoordinates(nn.Module):
    """Bijection between Cartesian coordinates and (internal coordinates, global frame).

    Layout of ``ic`` [B, 3n-6] (n = number of atoms; p indexes the placement order of the ZMatrix):

    - columns ``bond_columns`` = 0 .. n-2: bond lengths (nm) of atoms p = 1 .. n-1 to their first
      reference j (for a1 that is a0; for a2 whichever of a0/a1 it is bonded to);
    - columns ``angle_columns`` = n-1 .. 2n-4: bond angles i-j-k (radians, [0, pi]) of atoms
      p = 2 .. n-1;
    - columns ``torsion_columns`` = 2n-3 .. 3n-7: torsions i-j-k-l (radians, (-pi, pi], IUPAC sign
      as mdtraj) of atoms p = 3 .. n-1; ``ZMatrix.torsion_quads`` lists their atom quadruples.

    Layout of ``frame`` [B, 6], the 6 external degrees of freedom:

    - 0..2: position of a0 (nm);
    - 3: polar angle (radians, [0, pi], from +z) of the unit vector a0 -> a1;
    - 4: azimuthal angle (radians, (-pi, pi], from +x towards +y) of that vector;
    - 5: rotation of a2 about the a0 -> a1 axis (radians, (-pi, pi]): the azimuth of a2's position
      around that axis, measured from the polar unit vector (direction of increasing polar angle)
      towards the azimuthal unit vector of the a0 -> a1 direction.

    Jacobian: the map is a chain of spherical coordinates (a1 around a0; a2 around its bond partner;
    every later atom i around j with polar axis j -> k and azimuth the torsion), so

        log|det dx/d(ic, frame)| = sum over atoms p >= 1 of (2 log r_p + log sin theta_p),

    with theta the polar angle for a1 and the bond angle for all later atoms. ``to_cartesian``
    returns it and ``to_internal`` returns its negative.

    ``forward`` is ``to_cartesian`` (the generative direction, as for the flows in boltzflow).
    Works for any floating dtype (the index tensors are buffers that follow ``.to(device)``).
    """

    def __init__(self, zmatrix: ZMatrix):
        super().__init__()
        self.zmatrix = zmatrix
        n = zmatrix.n_atoms
        self.n_atoms = n
        self.dim = 3 * n - 6
        long = torch.long
        self.register_buffer("order", torch.tensor(zmatrix.order, dtype=long), persistent=False)
        self.register_buffer("references", torch.tensor(zmatrix.references, dtype=long), persistent=False)
        self.register_buffer("bond_pairs", torch.tensor(zmatrix.bond_pairs, dtype=long), persistent=False)
        self.register_buffer("angle_triples", torch.tensor(zmatrix.angle_triples, dtype=long), persistent=False)
        self.register_buffer("torsion_quads", torch.tensor(zmatrix.torsion_quads, dtype=long), persistent=False)
        self.register_buffer("bond_columns", torch.arange(0, n - 1), persistent=False)
        self.register_buffer("angle_columns", torch.arange(n - 1, 2 * n - 3), persistent=False)
        self.register_buffer("torsion_columns", torch.arange(2 * n - 3, 3 * n - 6), persistent=False)
        is_torsion = torch.zeros(3 * n - 6, dtype=torch.bool)
        is_torsion[2 * n - 3 :] = True
        self.register_buffer("is_torsion", is_torsion, persistent=False)

    # -- x -> (ic, frame) -------------------------------------------------------------------------

    def to_internal(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cartesian [B, n_atoms, 3] (nm) -> (ic [B, 3n-6], frame [B, 6], log|det d(ic, frame)/dx| [B])."""
        if x.shape[-2:] != (self.n_atoms, 3):
            raise ValueError(f"expected positions of shape [B, {self.n_atoms}, 3], got {tuple(x.shape)}")
        pairs, triples = self.bond_pairs, self.angle_triples
        bonds = torch.linalg.vector_norm(x[:, pairs[:, 0]] - x[:, pairs[:, 1]], dim=-1)
        angles = _bond_angles(x[:, triples[:, 0]], x[:, triples[:, 1]], x[:, triples[:, 2]])
        torsions = dihedral_angles_torch(x, self.torsion_quads)
        ic = torch.cat([bonds, angles, torsions], dim=-1)
        frame = self._frame_from_positions(x)
        log_det = -(self.log_jacobian_internal(ic) + torch.log(torch.sin(frame[:, 3])))
        return ic, frame, log_det

    def _frame_from_positions(self, x: torch.Tensor) -> torch.Tensor:
        a0, a1, a2 = (int(a) for a in self.zmatrix.order[:3])
        a2_partner = int(self.zmatrix.references[2, 0])
        origin = x[:, a0]
        bond = x[:, a1] - origin
        transverse = torch.linalg.vector_norm(bond[:, :2], dim=-1)
        polar = torch.atan2(transverse, bond[:, 2])
        azimuth = _wrap_to_half_open(torch.atan2(bond[:, 1], bond[:, 0]))
        _, e_polar, e_azimuth = _frame_axes(polar, azimuth)
        # Projection onto the two perpendicular axes drops the component of a2 along the bond.
        offset = x[:, a2] - x[:, a2_partner]
        rotation = _wrap_to_half_open(
            torch.atan2((offset * e_azimuth).sum(-1), (offset * e_polar).sum(-1))
        )
        return torch.cat([origin, torch.stack([polar, azimuth, rotation], dim=-1)], dim=-1)

    # -- (ic, frame) -> x -------------------------------------------------------------------------

    def to_cartesian(
        self, ic: torch.Tensor, frame: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(ic [B, 3n-6], frame [B, 6]) -> (Cartesian [B, n_atoms, 3] in nm, log|det dx/d(ic, frame)| [B]).

        ``frame=None`` uses the canonical frame (a0 at the origin, a0 -> a1 along +x, a2 in the
        x-y plane: polar pi/2, azimuth 0, rotation 0); its log sin(polar) term is 0, so the returned
        log_det then equals ``log_jacobian_internal(ic)``. Energies are invariant to the frame, so
        this is what a flow over ``ic`` alone uses.
        """
        if ic.shape[-1] != self.dim:
            raise ValueError(f"expected internal coordinates of shape [B, {self.dim}], got {tuple(ic.shape)}")
        batch = ic.shape[0]
        if frame is None:
            frame = ic.new_zeros(batch, 6)
            frame[:, 3] = math.pi / 2
        n = self.n_atoms
        bonds = ic[:, : n - 1]
        angles = ic[:, n - 1 : 2 * n - 3]
        torsions = ic[:, 2 * n - 3 :]
        order = self.zmatrix.order
        references = self.zmatrix.references

        # Positions collected per atom, not written in place, so autograd sees a plain graph.
        positions: list[torch.Tensor | None] = [None] * n
        u, e_polar, e_azimuth = _frame_axes(frame[:, 3], frame[:, 4])
        positions[order[0]] = frame[:, :3]
        positions[order[1]] = frame[:, :3] + bonds[:, :1] * u
        # a2: spherical coordinates around its bond partner, polar axis towards the other atom.
        partner, other = references[2, 0], references[2, 1]
        axis = u if other == order[1] else -u
        angle, rotation = angles[:, :1], frame[:, 5:6]
        direction = torch.cos(angle) * axis + torch.sin(angle) * (
            torch.cos(rotation) * e_polar + torch.sin(rotation) * e_azimuth
        )
        positions[order[2]] = positions[partner] + bonds[:, 1:2] * direction

        for p in range(3, n):
            j, k, l_atom = references[p]
            positions[order[p]] = _place_atom(
                positions[j], positions[k], positions[l_atom],
                bonds[:, p - 1], angles[:, p - 2], torsions[:, p - 3],
            )
        x = torch.stack(positions, dim=1)
        log_det = self.log_jacobian_internal(ic) + torch.log(torch.sin(frame[:, 3]))
        return x, log_det

    forward = to_cartesian

    # -- Jacobian ---------------------------------------------------------------------------------

    def log_jacobian_internal(self, ic: torch.Tensor) -> torch.Tensor:
        """The ic-dependent part of log|det dx/d(ic, frame)|: sum of 2 log(bond) + log sin(angle) [B].

        It excludes only the frame's log sin(polar). Integrating the frame out of
        p(x) ∝ exp(-u(x)) therefore gives the exact marginal density of the internal coordinates,

            p(ic) ∝ exp(-u(x(ic))) * exp(log_jacobian_internal(ic)),

        with the frame contributing the constant 8 pi^2 * Volume (a0 anywhere in the volume,
        ∫ sin(polar) d polar d azimuth = 4 pi, rotation over 2 pi). This is how a flow that models
        only the 3n-6 internal coordinates gets exact importance weights:
        log w = -u(x(ic)) + log_jacobian_internal(ic) - log q(ic).
        """
        n = self.n_atoms
        bonds = ic[:, : n - 1]
        angles = ic[:, n - 1 : 2 * n - 3]
        return 2 * torch.log(bonds).sum(-1) + torch.log(torch.sin(angles)).sum(-1)
