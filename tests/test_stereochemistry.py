"""A tetrahedral centre that turns into its mirror image during MD stops the run (alanine dipeptide)."""

import math

import numpy as np
import pytest
import yaml

from boltzflow.molecules import load_molecule
from boltzflow.physics_errors import PhysicsError
from boltzflow.stages.md import check_stereochemistry
from boltzflow.stereochemistry import chirality, first_inversion, handedness, tetrahedral_centres
from boltzflow.systems import system_from_config
from workflow_helpers import ROOT

PDB = ROOT / "data/alanine_dipeptide.pdb"
CA, HA, C, CB = 8, 9, 10, 12


@pytest.fixture(scope="module")
def molecule():
    return load_molecule(PDB)


def test_the_four_bonded_atoms_are_the_centres(molecule):
    centres, neighbours = tetrahedral_centres(molecule.bonds, molecule.n_atoms)
    # The three methyl carbons and the alpha carbon, each with its three lowest-numbered neighbours.
    np.testing.assert_array_equal(centres, [0, CA, CB, 18])
    np.testing.assert_array_equal(neighbours[1], [6, HA, C])  # N, HA, C


def test_a_mirror_image_inverts_every_centre_and_a_rotation_none(molecule):
    centres, neighbours = tetrahedral_centres(molecule.bonds, molecule.n_atoms)
    x = molecule.positions_nm
    reference = handedness(x, centres, neighbours)
    assert np.all(np.abs(reference) == 1)
    mirrored = x * np.array([-1.0, 1.0, 1.0])
    np.testing.assert_array_equal(handedness(mirrored, centres, neighbours), -reference)
    angle = 2.0
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    np.testing.assert_array_equal(handedness(x @ rotation.T + 0.3, centres, neighbours), reference)


def test_swapping_two_substituents_of_the_alpha_carbon_is_found_at_its_frame(molecule):
    centres, neighbours = tetrahedral_centres(molecule.bonds, molecule.n_atoms)
    x = molecule.positions_nm
    swapped = x.copy()
    swapped[[HA, CB]] = x[[CB, HA]]  # D-alanine's alpha carbon (the methyl group is dragged along, not inverted)
    frames = np.stack([np.stack([x, x, x]), np.stack([x, x, swapped])])  # [state, frame, atom, 3]
    assert first_inversion(frames, x, centres, neighbours) == ((1, 2), CA)
    assert first_inversion(frames[:, :2], x, centres, neighbours) is None


def test_a_centre_just_past_planar_is_an_excursion_and_well_past_it_an_inversion():
    # One centre at the origin with neighbours a, b, d = (-1, -1, z): chirality z / sqrt(2 + z²).
    def centre(z):
        return np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, -1.0, z]])

    centres, neighbours = np.array([0]), np.array([[1, 2, 3]])
    assert chirality(centre(1.0), centres, neighbours)[0] == pytest.approx(1 / math.sqrt(3))
    assert chirality(centre(-0.0707), centres, neighbours)[0] == pytest.approx(-0.05, abs=1e-3)
    frames = np.stack([centre(1.0), centre(-0.0707), centre(0.3), centre(-0.5), centre(-1.0)])
    # z = -0.5 gives -0.33, past -0.3; the excursion to -0.05 before it is not an inversion.
    assert first_inversion(frames, centre(1.0), centres, neighbours) == ((3,), 0)
    assert first_inversion(frames[:3], centre(1.0), centres, neighbours) is None


def test_the_replica_exchange_stops_with_one_line_naming_atom_temperature_and_time(molecule):
    block = yaml.safe_load((ROOT / "config/config.yaml").read_text())["systems"]["alanine_dipeptide"]
    system = system_from_config("alanine_dipeptide", {**block, "pdb": str(PDB), "temperatures": [300, 600]})
    x = molecule.positions_nm
    swapped = x.copy()
    swapped[[HA, CB]] = x[[CB, HA]]
    frames = np.stack([np.stack([x, x]), np.stack([x, swapped])])
    check_stereochemistry(system, molecule, frames[:, :1], np.array([0.1]), run=1)  # nothing inverted
    with pytest.raises(PhysicsError) as error:
        check_stereochemistry(system, molecule, frames, np.array([0.1, 0.2]), run=2)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("alanine_dipeptide: replica exchange run 2: ALA2 CA turned into its mirror image "
                              "at 600 K, 0.2 ps")
    assert "lower the top of the ladder" in message


def _restraint_energy(force, positions_nm):
    import openmm

    system = openmm.System()
    for _ in range(len(positions_nm)):
        system.addParticle(12.0)
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions_nm)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)


def test_the_chirality_restraint_is_zero_at_a_tetrahedron_k_when_planar_and_steep_in_the_mirror_image():
    from boltzflow.molecules import CHIRALITY_RESTRAINT_KJ_MOL as K
    from boltzflow.molecules import CHIRALITY_RESTRAINT_ONSET as ONSET
    from boltzflow.molecules import chirality_restraint

    # A regular tetrahedron around atom 0: the chirality of three of its unit vectors is 4 / (3 sqrt 3).
    vertices = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float) / np.sqrt(3) * 0.11
    x = np.vstack([np.zeros(3), vertices])
    bonds = [(0, 1), (0, 2), (0, 3), (0, 4)]
    chi = 4 / (3 * np.sqrt(3))
    centres, neighbours = tetrahedral_centres(bonds, 5)
    assert chirality(x, centres, neighbours)[0] == pytest.approx(chi)
    assert _restraint_energy(chirality_restraint(bonds, x), x) == 0.0
    planar = x.copy()
    planar[0] = vertices[:3].mean(axis=0)  # the centre in the plane of atoms 1, 2, 3
    assert _restraint_energy(chirality_restraint(bonds, x), planar) == pytest.approx(K, rel=1e-9)
    mirror = x * np.array([-1.0, 1.0, 1.0])
    assert _restraint_energy(chirality_restraint(bonds, x), mirror) == pytest.approx(K * (1 + chi / ONSET) ** 2, rel=1e-9)
    # Restraining to the mirror image: the same numbers the other way round.
    assert _restraint_energy(chirality_restraint(bonds, mirror), mirror) == 0.0
    assert _restraint_energy(chirality_restraint(bonds, mirror), x) == pytest.approx(K * (1 + chi / ONSET) ** 2, rel=1e-9)


def test_alanine_dipeptide_is_restrained_and_its_pdb_structure_feels_nothing(molecule):
    import openmm

    restraint = [force for force in molecule.system.getForces() if force.getName() == "ChiralityRestraint"]
    assert len(restraint) == 1 and restraint[0].getNumBonds() == 4
    context = openmm.Context(molecule.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(molecule.positions_nm)
    on = context.getState(getEnergy=True).getPotentialEnergy()
    context.setParameter("chirality_k", 0.0)
    assert context.getState(getEnergy=True).getPotentialEnergy() == on
    swapped = molecule.positions_nm.copy()
    swapped[[HA, CB]] = molecule.positions_nm[[CB, HA]]
    context.setPositions(swapped)
    off = context.getState(getEnergy=True).getPotentialEnergy()
    context.setParameter("chirality_k", 50.0)
    assert (context.getState(getEnergy=True).getPotentialEnergy() - off).value_in_unit(openmm.unit.kilojoule_per_mole) > 500


def test_imported_frames_of_the_mirror_image_are_refused_in_one_line(molecule):
    from boltzflow.physics_errors import InputFileError
    from boltzflow.stages.md import check_imported_stereochemistry

    x = molecule.positions_nm
    swapped = x.copy()
    swapped[[HA, CB]] = x[[CB, HA]]
    check_imported_stereochemistry(molecule, np.stack([x, x]), "md.files.300: 'a.dcd'")
    with pytest.raises(InputFileError) as error:
        check_imported_stereochemistry(molecule, np.stack([x, x, swapped]), "md.files.300: 'a.dcd'")
    assert str(error.value) == ("md.files.300: 'a.dcd': ALA2 CA is the mirror image of the PDB's at frame 2; expected MD "
                                "that keeps every tetrahedral centre's handedness (the PDB's)")


# Onset 0.3, K = 50 kJ/mol, normalization by the three *different* bond lengths.
def _centre(elevation_deg, lengths=(0.10, 0.15, 0.20, 0.11)):
    a = math.radians(elevation_deg)
    u = [[math.cos(a) * math.cos(p), math.cos(a) * math.sin(p), -math.sin(a)] for p in (0, 2 * math.pi / 3, 4 * math.pi / 3)]
    u.append([0.0, 0.0, 1.0])
    return np.vstack([np.zeros(3), np.array(u) * np.array(lengths)[:, None]])


def test_restraint_energy_is_50_kj_mol_times_the_flat_bottom_at_0_3_for_unequal_bonds():
    from boltzflow.molecules import chirality_restraint
    bonds = [(0, 1), (0, 2), (0, 3), (0, 4)]
    reference = _centre(19.47)
    centres, neighbours = tetrahedral_centres(bonds, 5)
    s = np.sign(chirality(reference, centres, neighbours)[0])
    for elevation in (19.47, 7.5, 6.0, 4.0, 0.0, -10.0, -19.47):
        x = _centre(elevation)
        chi = s * chirality(x, centres, neighbours)[0]
        expected = 50.0 * max(0.0, 1.0 - chi / 0.3) ** 2
        assert _restraint_energy(chirality_restraint(bonds, reference), x) == pytest.approx(expected, rel=1e-6, abs=1e-9), elevation
    assert _restraint_energy(chirality_restraint(bonds, reference), _centre(7.5)) == 0.0
    assert _restraint_energy(chirality_restraint(bonds, reference), _centre(6.0)) > 0.0  # onset between


def test_the_replica_exchange_stage_checks_while_it_runs(molecule, monkeypatch):
    # A run that inverts stops at the first check, with the check's one line (the system named once).
    import boltzflow.stages.md as md_stage
    from boltzflow.replica_exchange import ReplicaExchangeSettings

    block = yaml.safe_load((ROOT / "config/config.yaml").read_text())["systems"]["alanine_dipeptide"]
    system = system_from_config("alanine_dipeptide", {**block, "pdb": str(PDB), "temperatures": [300, 600]})
    checked = []

    def inverted(system, molecule, positions_nm, time_ps, run):
        checked.append(time_ps)
        raise PhysicsError(f"{system.name}: replica exchange run {run}: ALA2 CA turned into its mirror image")

    monkeypatch.setattr(md_stage, "check_stereochemistry", inverted)
    settings = ReplicaExchangeSettings(steps_per_exchange=10, exchanges=200, equilibration_exchanges=0,
                                       report_interval=10, platform="Reference", seed=3)
    lines = []
    with pytest.raises(PhysicsError) as error:
        md_stage.replica_exchange_stage(system, settings, log=lines.append, run=1)
    assert str(error.value) == "alanine_dipeptide: replica exchange run 1: ALA2 CA turned into its mirror image"
    assert len(checked) == 1 and checked[0][-1] < 4.0 / 5  # within the first fifth of the run's 4 ps
    assert sum("exchange " in line and "ETA" in line for line in lines) == 1
