"""The OpenMM bridge: the shipped alanine dipeptide, batch energies and forces, and the input errors.

Truths used: fresh OpenMM Simulations built straight from the force field (not through load_molecule),
central finite differences of the energy, and the dihedral of mdtraj.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import mdtraj
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch

from boltzflow.molecules import (
    EnergyEvaluator,
    MoleculeError,
    check_dihedral_chains,
    load_molecule,
    reduced_energy_function,
    select_platform,
    validate_dihedrals,
)
from boltzflow.settings import ReplicaExchangeSettings
from boltzflow.stages.md import replica_exchange_stage
from boltzflow.systems import kt_kj_mol, molecule_system_from_config

ALANINE_DIPEPTIDE_PDB = Path(__file__).resolve().parents[1] / "data" / "alanine_dipeptide.pdb"
# φ = C(ACE)-N-CA-C(ALA), 0-based indices in the shipped PDB.
PHI_ATOMS = [4, 6, 8, 10]


@pytest.fixture(scope="module")
def molecule():
    return load_molecule(ALANINE_DIPEPTIDE_PDB)


@pytest.fixture(scope="module")
def perturbed_positions_nm(molecule):
    rng = np.random.default_rng(11)
    return molecule.positions_nm + 0.005 * rng.standard_normal((20, molecule.n_atoms, 3))


@pytest.fixture(scope="module")
def reference_topology_and_system():
    """Built straight from the force field, not through load_molecule."""
    pdb = app.PDBFile(str(ALANINE_DIPEPTIDE_PDB))
    forcefield = app.ForceField("amber99sbildn.xml", "amber99_obc.xml")
    return pdb.topology, forcefield.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)


def _fresh_single_point_energy_kj_mol(topology, system, positions_nm: np.ndarray) -> float:
    simulation = app.Simulation(topology, system, openmm.VerletIntegrator(0.001),
                                openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(positions_nm * unit.nanometer)
    energy = simulation.context.getState(getEnergy=True).getPotentialEnergy()
    return energy.value_in_unit(unit.kilojoule_per_mole)


def test_shipped_alanine_dipeptide_has_22_atoms_21_bonds_and_negative_phi(molecule):
    assert molecule.n_atoms == 22
    assert len(molecule.bonds) == 21
    assert molecule.heavy.sum() == 10  # 6 C, 2 N, 2 O
    trajectory = mdtraj.load(str(ALANINE_DIPEPTIDE_PDB))
    phi_rad = mdtraj.compute_dihedrals(trajectory, [PHI_ATOMS])[0, 0]
    assert phi_rad < 0
    names = [(a.residue.name, a.name) for a in molecule.topology.atoms()]
    assert [names[i] for i in PHI_ATOMS] == [("ACE", "C"), ("ALA", "N"), ("ALA", "CA"), ("ALA", "C")]


def test_batch_energies_equal_fresh_single_point_energies(molecule, perturbed_positions_nm,
                                                          reference_topology_and_system):
    with EnergyEvaluator(molecule) as evaluator:
        energy_kj_mol, forces_kj_mol_nm = evaluator(perturbed_positions_nm)
        assert evaluator.samples_per_second > 0
    expected = [_fresh_single_point_energy_kj_mol(*reference_topology_and_system, x)
                for x in perturbed_positions_nm]
    np.testing.assert_allclose(energy_kj_mol, expected, rtol=1e-6)
    assert energy_kj_mol.dtype == np.float64 and forces_kj_mol_nm.shape == perturbed_positions_nm.shape


def test_forces_equal_minus_central_difference_gradient(molecule, perturbed_positions_nm):
    step_nm = 1e-5
    x = perturbed_positions_nm[3]
    with EnergyEvaluator(molecule) as evaluator:
        _, forces_kj_mol_nm = evaluator(x[None])
        for atom, axis in [(8, 0), (13, 2), (19, 1)]:
            displaced = np.stack([x, x])
            displaced[0, atom, axis] += step_nm
            displaced[1, atom, axis] -= step_nm
            energy_plus, energy_minus = evaluator(displaced)[0]
            gradient = (energy_plus - energy_minus) / (2 * step_nm)
            assert forces_kj_mol_nm[0, atom, axis] == pytest.approx(-gradient, rel=1e-4, abs=1e-2)


def test_two_workers_give_the_energies_of_one(molecule, perturbed_positions_nm):
    with EnergyEvaluator(molecule) as evaluator:
        serial = evaluator(perturbed_positions_nm)
    with EnergyEvaluator(molecule, n_workers=2) as evaluator:
        parallel = evaluator(perturbed_positions_nm)
    np.testing.assert_allclose(parallel[0], serial[0], rtol=1e-12)
    np.testing.assert_allclose(parallel[1], serial[1], rtol=1e-12, atol=1e-9)


def test_workers_do_not_rerun_an_unguarded_main_script(tmp_path):
    # Snakemake scripts run their stage at top level; spawned workers must not run it again.
    marker = tmp_path / "runs.txt"
    script = tmp_path / "stage.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1] / "src")!r})
        with open({str(marker)!r}, "a") as handle:
            handle.write("ran\\n")
        from boltzflow.molecules import EnergyEvaluator, load_molecule
        molecule = load_molecule({str(ALANINE_DIPEPTIDE_PDB)!r})
        with EnergyEvaluator(molecule, n_workers=2) as evaluator:
            energy = evaluator(molecule.positions_nm[None].repeat(8, axis=0))[0]
        assert len(set(energy.tolist())) == 1
    """))
    subprocess.run([sys.executable, str(script)], check=True, timeout=60, cwd=tmp_path)
    assert marker.read_text().splitlines() == ["ran"]


def test_nan_positions_give_nan_rows_and_leave_the_others_alone(molecule, perturbed_positions_nm):
    positions_nm = perturbed_positions_nm[:5].copy()
    positions_nm[1, 7, 2] = np.nan
    positions_nm[3, 0, 0] = np.inf
    with EnergyEvaluator(molecule) as evaluator:
        energy_kj_mol, forces_kj_mol_nm = evaluator(positions_nm)
        clean_energy_kj_mol, clean_forces_kj_mol_nm = evaluator(perturbed_positions_nm[:5])
    bad = np.array([False, True, False, True, False])
    assert np.isnan(energy_kj_mol[bad]).all() and np.isnan(forces_kj_mol_nm[bad]).all()
    np.testing.assert_array_equal(energy_kj_mol[~bad], clean_energy_kj_mol[~bad])
    np.testing.assert_array_equal(forces_kj_mol_nm[~bad], clean_forces_kj_mol_nm[~bad])


def test_reduced_energy_gradient_is_minus_forces_over_kt(molecule, perturbed_positions_nm):
    kt = kt_kj_mol(300.0)
    positions_nm = perturbed_positions_nm[:4].copy()
    positions_nm[2, 5, 1] = np.nan
    with EnergyEvaluator(molecule) as evaluator:
        energy_kj_mol, forces_kj_mol_nm = evaluator(positions_nm)
        x = torch.tensor(positions_nm, requires_grad=True)
        u = reduced_energy_function(evaluator, kt)(x)
        finite = torch.isfinite(u)
        u[finite].sum().backward()
    np.testing.assert_allclose(u.detach().numpy(), energy_kj_mol / kt, rtol=1e-12)
    assert finite.tolist() == [True, True, False, True]
    expected = np.nan_to_num(-forces_kj_mol_nm / kt, nan=0.0)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)
    assert (x.grad[2] == 0).all()


def test_dihedrals_of_bonded_chains_pass_the_chain_check(molecule):
    check_dihedral_chains(molecule, {"phi": PHI_ATOMS, "psi": [6, 8, 10, 16]})


def test_one_based_pdb_serials_are_caught_as_no_bonded_chain(molecule):
    # φ by its PDB serial numbers 5, 7, 9, 11: the atoms O, H, HA, O, which have a dihedral angle but no bonds.
    with pytest.raises(MoleculeError) as raised:
        check_dihedral_chains(molecule, {"phi": [5, 7, 9, 11]})
    message = str(raised.value)
    assert message.startswith("molecule.cvs.phi: atoms 5 (ACE1 O) and 7 (ALA2 H) are not bonded, so [5, 7, 9, 11] "
                              "(ACE1 O – ALA2 H – ALA2 HA – ALA2 O) is not a bonded chain")
    assert "0-based" in message and "\n" not in message


def test_replica_exchange_log_names_the_atoms_of_each_cv():
    system = molecule_system_from_config("alanine_dipeptide", {
        "type": "molecule", "pdb": str(ALANINE_DIPEPTIDE_PDB), "forcefield": ["amber99sbildn.xml", "amber99_obc.xml"],
        "constraints": "none", "temperatures": [300, 400], "cv_units": "degrees",
        "cvs": {"phi": PHI_ATOMS, "psi": [6, 8, 10, 16]}, "states": {"all": {}}})
    settings = ReplicaExchangeSettings(steps_per_exchange=2, exchanges=1, equilibration_exchanges=0,
                                       report_interval=1, platform="Reference")
    lines = []
    replica_exchange_stage(system, settings, log=lines.append)
    assert "phi = ACE1 C – ALA2 N – ALA2 CA – ALA2 C" in lines
    assert "psi = ALA2 N – ALA2 CA – ALA2 C – NME3 N" in lines


def test_auto_platform_returns_an_available_platform_and_logs_timings(molecule):
    lines = []
    chosen = select_platform("auto", molecule, log=lines.append, budget_s=0.2)
    assert chosen in {"Reference", "CPU", "CUDA", "OpenCL"}
    assert "steps/s" in lines[-1] and chosen in lines[-1]
    assert select_platform("Reference", molecule, log=lines.append) == "Reference"


def _renamed_alanine_pdb(tmp_path):
    path = tmp_path / "xyz.pdb"
    path.write_text(ALANINE_DIPEPTIDE_PDB.read_text().replace("ALA", "XYZ"))
    return path


@pytest.mark.parametrize("make_call, expected", [
    (lambda tmp: load_molecule(tmp / "missing.pdb"),
     "molecule.pdb: cannot read '.*missing.pdb' as a PDB file"),
    (lambda tmp: load_molecule(_write(tmp / "notes.pdb", "just some notes\nno atoms here\n")),
     "molecule.pdb: cannot read '.*notes.pdb' as a PDB file"),
    (lambda tmp: load_molecule(_renamed_alanine_pdb(tmp)),
     r"molecule.pdb: residue 2 \(XYZ\) of '.*xyz.pdb' matches no template in amber99sbildn.xml, amber99_obc.xml"
     r".*; boltzflow knows only the residues the force-field files have templates for: for a ligand, build an "
     r"OpenMM XML for it elsewhere \(openmmforcefields, GAFF or SMIRNOFF\) and add it to the forcefield list$"),
    (lambda tmp: load_molecule(ALANINE_DIPEPTIDE_PDB, forcefield_files=("amber99sbildn.xml", "foo.xml")),
     "molecule.forcefield: 'foo.xml' is not a force-field file OpenMM knows"),
    (lambda tmp: load_molecule(ALANINE_DIPEPTIDE_PDB, constraints="some"), "molecule.constraints: "),
    (lambda tmp: validate_dihedrals({"phi": [4, 6, 8, 22]}, 22), "cvs.phi: atom index 22 is out of range"),
    (lambda tmp: validate_dihedrals({"psi": [6, 8, 10, 6]}, 22), "cvs.psi: atom indices must be distinct"),
    (lambda tmp: select_platform("CUDA", load_molecule(ALANINE_DIPEPTIDE_PDB)),
     r"md.platform: 'CUDA' is not available here \(available: Reference"),
    (lambda tmp: select_platform("GPU", load_molecule(ALANINE_DIPEPTIDE_PDB)), "md.platform: expected one of"),
])
def test_bad_inputs_raise_one_line_errors_naming_the_key(tmp_path, make_call, expected):
    if "CUDA" in expected and "CUDA" in [openmm.Platform.getPlatform(i).getName()
                                         for i in range(openmm.Platform.getNumPlatforms())]:
        pytest.skip("CUDA is available on this machine")
    with pytest.raises(MoleculeError, match=expected) as raised:
        make_call(tmp_path)
    assert "\n" not in str(raised.value)


def _write(path, text):
    path.write_text(text)
    return path
