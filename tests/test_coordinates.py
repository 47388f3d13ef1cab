"""Tests of internal coordinates (boltzflow.coordinates).

Independent truths: the identity (round trips), the full autograd Jacobian (log-determinants),
mdtraj.compute_dihedrals (torsion convention), and the definition of a Z-matrix (reference checks).
"""

from __future__ import annotations

import math
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch

from boltzflow.coordinates import (
    InternalCoordinates,
    build_zmatrix,
    dihedral_angles,
    dihedral_angles_torch,
)

torch.set_num_threads(1)

PDB_PATH = Path(__file__).resolve().parents[1] / "data" / "alanine_dipeptide.pdb"

# Alanine dipeptide (ACE-ALA-NME) by hand, atoms in the order
# ACE: H1 CH3 H2 H3 C O | ALA: N H CA HA CB HB1 HB2 HB3 C O | NME: N H C H1 H2 H3.
ALANINE_BONDS = [
    (0, 1), (1, 2), (1, 3), (1, 4), (4, 5), (4, 6),
    (6, 7), (6, 8), (8, 9), (8, 10), (10, 11), (10, 12), (10, 13), (8, 14), (14, 15), (14, 16),
    (16, 17), (16, 18), (18, 19), (18, 20), (18, 21),
]
ALANINE_HEAVY = [i in (1, 4, 5, 6, 8, 10, 14, 15, 16, 18) for i in range(22)]
ALANINE_CA = 8

# Methane: every atom bonded to the centre, so no proper torsion exists (improper fallback).
METHANE_BONDS = [(0, 1), (0, 2), (0, 3), (0, 4)]


def _pdb_graph():
    openmm_app = pytest.importorskip("openmm.app")
    if not PDB_PATH.exists():
        pytest.skip(f"{PDB_PATH} not present")
    topology = openmm_app.PDBFile(str(PDB_PATH)).topology
    bonds = [(a.index, b.index) for a, b in topology.bonds()]
    heavy = [atom.element.symbol != "H" for atom in topology.atoms()]
    return bonds, topology.getNumAtoms(), heavy


def _graph(name: str):
    if name == "alanine_by_hand":
        return ALANINE_BONDS, 22, ALANINE_HEAVY
    if name == "alanine_pdb":
        return _pdb_graph()
    if name == "methane":
        return METHANE_BONDS, 5, [True, False, False, False, False]
    raise KeyError(name)


GRAPHS = ["alanine_by_hand", "alanine_pdb", "methane"]


def _random_internal(transform: InternalCoordinates, batch: int, seed: int):
    """Random but chemically reasonable (ic, frame) in float64: bonds 0.1-0.155 nm, angles near
    tetrahedral, torsions uniform, frame anywhere away from the poles."""
    generator = torch.Generator().manual_seed(seed)
    n = transform.n_atoms

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(*shape, generator=generator, dtype=torch.float64)

    bonds = uniform(0.10, 0.155, batch, n - 1)
    angles = uniform(1.75, 2.05, batch, n - 2)
    torsions = uniform(-math.pi, math.pi, batch, n - 3)
    ic = torch.cat([bonds, angles, torsions], dim=-1)
    frame = torch.cat(
        [
            torch.randn(batch, 3, generator=generator, dtype=torch.float64),
            uniform(0.3, math.pi - 0.3, batch, 1),
            uniform(-math.pi, math.pi, batch, 2),
        ],
        dim=-1,
    )
    return ic, frame


def _random_geometries(transform: InternalCoordinates, batch: int, seed: int, noise_nm: float = 0.01):
    """Cartesian geometries [batch, n, 3] (nm, float64): random reasonable ic, then a Cartesian kick,
    so the test geometries are not built by the code path under test alone."""
    ic, frame = _random_internal(transform, batch, seed)
    x, _ = transform.to_cartesian(ic, frame)
    generator = torch.Generator().manual_seed(seed + 1)
    return x + noise_nm * torch.randn(x.shape, generator=generator, dtype=torch.float64)


def _transform(name: str) -> InternalCoordinates:
    bonds, n_atoms, heavy = _graph(name)
    return InternalCoordinates(build_zmatrix(bonds, n_atoms, heavy))


# ----------------------------------------------------------------------------------------------------
# build_zmatrix
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GRAPHS)
def test_zmatrix_places_every_atom_once_after_its_references(name):
    bonds, n_atoms, heavy = _graph(name)
    zmatrix = build_zmatrix(bonds, n_atoms, heavy)
    bonded = {frozenset(b) for b in bonds}

    assert sorted(zmatrix.order.tolist()) == list(range(n_atoms))
    placed_at = {int(atom): p for p, atom in enumerate(zmatrix.order)}
    for p, atom in enumerate(zmatrix.order):
        used = [int(r) for r in zmatrix.references[p, : min(p, 3)]]
        assert all(r >= 0 for r in used) and (zmatrix.references[p, min(p, 3) :] == -1).all()
        assert len(set(used)) == len(used) and int(atom) not in used
        assert all(placed_at[r] < p for r in used)
        if p >= 1:
            assert frozenset((int(atom), used[0])) in bonded, "bond reference must be bonded"
        if p >= 2:
            assert frozenset(used[:2]) in bonded, "angle reference must be bonded to the bond reference"
        if p >= 3:
            j, k, l_atom = used
            assert frozenset((k, l_atom)) in bonded or frozenset((j, l_atom)) in bonded


def test_zmatrix_of_alanine_dipeptide_uses_proper_heavy_atom_torsions_from_the_centre():
    zmatrix = build_zmatrix(ALANINE_BONDS, 22, ALANINE_HEAVY)
    bonded = {frozenset(b) for b in ALANINE_BONDS}
    heavy = np.array(ALANINE_HEAVY)

    assert zmatrix.order[0] == ALANINE_CA
    assert heavy[zmatrix.order[:10]].all(), "heavy atoms are placed before hydrogens"
    # Bonds and angles are measured from heavy atoms only; a hydrogen serves only as the sibling
    # reference of another hydrogen on the same atom (methyl rotors are one coordinate).
    assert heavy[zmatrix.references[:, :2][zmatrix.references[:, :2] >= 0]].all()
    for i, j, k, l_atom in zmatrix.torsion_quads:
        assert {frozenset((i, j)), frozenset((j, k))} <= bonded
        sibling = frozenset((j, l_atom)) in bonded
        assert sibling or frozenset((k, l_atom)) in bonded
        if not heavy[l_atom]:
            assert sibling and not heavy[i]
    # Backbone dihedrals are proper torsions of the Z-matrix: phi and psi.
    quads = {tuple(q) for q in zmatrix.torsion_quads.tolist()}
    assert {(4, 6, 8, 14), (6, 8, 14, 16)} <= quads or {(4, 6, 8, 10), (6, 8, 10, 16)} <= quads


def test_sibling_torsions_can_be_switched_off():
    zmatrix = build_zmatrix(ALANINE_BONDS, 22, ALANINE_HEAVY, sibling_torsions=False)
    bonded = {frozenset(b) for b in ALANINE_BONDS}
    heavy = np.array(ALANINE_HEAVY)
    assert heavy[zmatrix.references[zmatrix.references >= 0]].all(), "no hydrogen is a reference"
    for i, j, k, l_atom in zmatrix.torsion_quads:
        assert {frozenset((i, j)), frozenset((j, k)), frozenset((k, l_atom))} <= bonded


def test_zmatrix_falls_back_to_improper_references_without_a_torsion_chain():
    zmatrix = build_zmatrix(METHANE_BONDS, 5, [True, False, False, False, False])
    assert zmatrix.order[0] == 0
    for i, j, k, l_atom in zmatrix.torsion_quads:
        assert j == 0 and len({i, j, k, l_atom}) == 4


def test_zmatrix_is_deterministic():
    first = build_zmatrix(ALANINE_BONDS, 22, ALANINE_HEAVY)
    second = build_zmatrix(list(reversed(ALANINE_BONDS)), 22, ALANINE_HEAVY)
    np.testing.assert_array_equal(first.order, second.order)
    np.testing.assert_array_equal(first.references, second.references)


def test_zmatrix_rejects_disconnected_graphs_and_too_few_atoms():
    with pytest.raises(ValueError, match="disconnected"):
        build_zmatrix([(0, 1), (1, 2), (3, 4)], 5)
    with pytest.raises(ValueError, match="disconnected"):
        build_zmatrix([(0, 1), (1, 2)], 4)  # atom 3 has no bond
    with pytest.raises(ValueError, match="at least 3 atoms"):
        build_zmatrix([(0, 1)], 2)


# ----------------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GRAPHS)
def test_cartesian_round_trip_float64(name):
    transform = _transform(name)
    x = _random_geometries(transform, batch=64, seed=1)
    ic, frame, _ = transform.to_internal(x)
    x_back, _ = transform.to_cartesian(ic, frame)
    assert ic.shape == (64, transform.dim) and frame.shape == (64, 6)
    assert (x_back - x).abs().max() < 1e-10


@pytest.mark.parametrize("name", GRAPHS)
def test_cartesian_round_trip_float32(name):
    transform = _transform(name)
    x = _random_geometries(transform, batch=64, seed=2).float()
    ic, frame, log_det = transform.to_internal(x)
    x_back, log_det_back = transform.to_cartesian(ic, frame)
    assert ic.dtype == frame.dtype == log_det.dtype == x_back.dtype == torch.float32
    # float32 carries ~1e-7 relative precision; the coordinates here are O(1 nm).
    assert (x_back - x).abs().max() < 1e-5
    torch.testing.assert_close(log_det_back, -log_det, rtol=0, atol=1e-3)


def test_internal_round_trip_recovers_ic_and_frame():
    transform = _transform("alanine_by_hand")
    ic, frame = _random_internal(transform, batch=32, seed=3)
    x, _ = transform.to_cartesian(ic, frame)
    ic_back, frame_back, _ = transform.to_internal(x)
    torch.testing.assert_close(ic_back, ic, rtol=0, atol=1e-10)
    # Angles wrap: compare frame angles on the circle.
    torch.testing.assert_close(frame_back[:, :4], frame[:, :4], rtol=0, atol=1e-10)
    assert torch.sin((frame_back[:, 4:] - frame[:, 4:]) / 2).abs().max() < 1e-10


def test_ic_ranges_and_column_layout():
    transform = _transform("alanine_by_hand")
    n = transform.n_atoms
    ic, frame, _ = transform.to_internal(_random_geometries(transform, batch=128, seed=4))
    assert torch.equal(transform.bond_columns, torch.arange(0, n - 1))
    assert torch.equal(transform.angle_columns, torch.arange(n - 1, 2 * n - 3))
    assert torch.equal(transform.torsion_columns, torch.arange(2 * n - 3, 3 * n - 6))
    assert transform.is_torsion.sum() == n - 3 and transform.is_torsion[transform.torsion_columns].all()
    assert (ic[:, transform.bond_columns] > 0).all()
    angles = ic[:, transform.angle_columns]
    assert ((angles >= 0) & (angles <= math.pi)).all()
    for values in (ic[:, transform.torsion_columns], frame[:, 4], frame[:, 5]):
        assert ((values > -math.pi) & (values <= math.pi)).all()
    assert ((frame[:, 3] >= 0) & (frame[:, 3] <= math.pi)).all()


def test_gradients_are_finite_for_normal_geometries():
    transform = _transform("alanine_by_hand")
    x = _random_geometries(transform, batch=16, seed=5).requires_grad_(True)
    ic, frame, log_det = transform.to_internal(x)
    (ic.sum() + frame.sum() + log_det.sum()).backward()
    assert torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------------------------------
# Log-Jacobians
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alanine_by_hand", "methane"])
def test_log_det_matches_full_autograd_jacobian(name):
    transform = _transform(name)
    n = transform.n_atoms
    ic, frame = _random_internal(transform, batch=3, seed=6)
    x, log_det = transform.to_cartesian(ic, frame)
    _, _, log_det_inverse = transform.to_internal(x)

    def flat_map(coordinates):
        positions, _ = transform.to_cartesian(coordinates[None, : 3 * n - 6], coordinates[None, 3 * n - 6 :])
        return positions.reshape(-1)

    for b in range(ic.shape[0]):
        jacobian = torch.autograd.functional.jacobian(flat_map, torch.cat([ic[b], frame[b]]))
        assert jacobian.shape == (3 * n, 3 * n)
        sign, log_abs_det = torch.linalg.slogdet(jacobian)
        assert sign != 0
        assert abs(log_det[b].item() - log_abs_det.item()) < 1e-8
        assert abs(log_det_inverse[b].item() + log_abs_det.item()) < 1e-8


def test_log_jacobian_internal_is_log_det_without_the_polar_term():
    transform = _transform("alanine_by_hand")
    ic, frame = _random_internal(transform, batch=32, seed=7)
    _, log_det = transform.to_cartesian(ic, frame)
    torch.testing.assert_close(
        transform.log_jacobian_internal(ic) + torch.log(torch.sin(frame[:, 3])), log_det, rtol=0, atol=1e-12
    )
    # The canonical frame (frame=None) has sin(polar) = 1.
    _, log_det_canonical = transform.to_cartesian(ic)
    torch.testing.assert_close(log_det_canonical, transform.log_jacobian_internal(ic), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# Dihedrals
# ----------------------------------------------------------------------------------------------------


def test_dihedral_angles_match_mdtraj():
    rng = np.random.default_rng(8)
    n_atoms, n_frames = 12, 50
    xyz = rng.normal(size=(n_frames, n_atoms, 3)).astype(np.float32)
    quads = np.array([rng.choice(n_atoms, size=4, replace=False) for _ in range(30)])

    topology = mdtraj.Topology()
    residue = topology.add_residue("UNK", topology.add_chain())
    for _ in range(n_atoms):
        topology.add_atom("C", mdtraj.element.carbon, residue)
    expected = mdtraj.compute_dihedrals(mdtraj.Trajectory(xyz, topology), quads, periodic=False)

    ours = dihedral_angles(xyz.astype(np.float64), quads)
    assert isinstance(ours, np.ndarray) and ours.shape == (n_frames, len(quads))
    difference = np.angle(np.exp(1j * (ours - expected)))  # on the circle
    assert np.abs(difference).max() < 1e-4  # mdtraj works in float32

    ours_torch = dihedral_angles_torch(torch.as_tensor(xyz, dtype=torch.float64), torch.as_tensor(quads))
    np.testing.assert_allclose(ours_torch.numpy(), ours, atol=1e-12)
    assert torch.is_tensor(dihedral_angles(torch.as_tensor(xyz), quads))


@pytest.mark.parametrize("name", ["alanine_by_hand", "methane"])
def test_torsion_columns_are_dihedrals_of_the_reference_quads(name):
    transform = _transform(name)
    x = _random_geometries(transform, batch=32, seed=9)
    ic, _, _ = transform.to_internal(x)
    expected = dihedral_angles(x.numpy(), transform.zmatrix.torsion_quads)
    np.testing.assert_allclose(ic[:, transform.torsion_columns].numpy(), expected, atol=1e-12)

    # And against mdtraj directly, on geometries built by to_cartesian from known torsions.
    ic_known, frame = _random_internal(transform, batch=8, seed=10)
    x_built, _ = transform.to_cartesian(ic_known, frame)
    topology = mdtraj.Topology()
    residue = topology.add_residue("UNK", topology.add_chain())
    for _ in range(transform.n_atoms):
        topology.add_atom("C", mdtraj.element.carbon, residue)
    trajectory = mdtraj.Trajectory(x_built.numpy().astype(np.float32), topology)
    from_mdtraj = mdtraj.compute_dihedrals(trajectory, transform.zmatrix.torsion_quads, periodic=False)
    difference = np.angle(np.exp(1j * (from_mdtraj - ic_known[:, transform.torsion_columns].numpy())))
    assert np.abs(difference).max() < 1e-3
