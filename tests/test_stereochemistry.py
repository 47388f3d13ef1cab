"""A tetrahedral centre that turns into its mirror image during MD stops the run (alanine dipeptide)."""

import numpy as np
import pytest
import yaml

from boltzflow.molecules import load_molecule
from boltzflow.physics_errors import PhysicsError
from boltzflow.stages.md import check_stereochemistry
from boltzflow.stereochemistry import first_inversion, handedness, tetrahedral_centres
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
