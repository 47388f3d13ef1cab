"""Build data/alanine_dipeptide.pdb: ACE-ALA-NME in the extended (β) basin, minimized with amber99sbildn + OBC.

Run from the repository root (``python data/make_alanine_dipeptide.py``); it rewrites the PDB next to this
script. The heavy atoms come from standard peptide geometry (bond lengths in Å, angles and dihedrals in
degrees, Engh & Huber-like values) placed one by one from internal coordinates; OpenMM adds the hydrogens
and minimizes, so the exact starting geometry matters little as long as the chirality and the basin are
right, and both are checked before the file is written.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

OUTPUT_PDB = Path(__file__).resolve().parent / "alanine_dipeptide.pdb"
FORCEFIELD_FILES = ("amber99sbildn.xml", "amber99_obc.xml")

# Backbone dihedrals of the starting structure, degrees: the extended (β / C5) form. Not C7eq (-80, 75):
# with OBC the C7eq well is too shallow to hold a minimizer, which slides from there into αR (-78, -15),
# whereas the β form stays put (about -145, 159 after minimization).
PHI_DEG = -150.0
PSI_DEG = 150.0
OMEGA_DEG = 180.0

# Bond lengths, Å.
N_CA_A, CA_C_A, C_N_A, C_O_A, CA_CB_A, CH3_C_A, N_CH3_A = 1.458, 1.525, 1.329, 1.231, 1.530, 1.520, 1.458
# Bond angles, degrees.
C_N_CA_DEG, N_CA_C_DEG, CA_C_N_DEG, N_C_O_DEG, N_CA_CB_DEG = 121.7, 111.2, 116.2, 123.0, 110.5
# Improper N-C-CA-CB that puts CB on the L side of CA, degrees.
N_C_CA_CB_DEG = 122.7


def place_atom(a, b, c, bond_a: float, angle_deg: float, dihedral_deg: float) -> np.ndarray:
    """Position of d with |cd| = bond_a, angle b-c-d = angle_deg and dihedral a-b-c-d = dihedral_deg."""
    angle, dihedral = math.radians(angle_deg), math.radians(dihedral_deg)
    bc = (c - b) / np.linalg.norm(c - b)
    normal = np.cross(b - a, bc)
    normal /= np.linalg.norm(normal)
    in_plane = np.cross(normal, bc)
    # d in the local frame (bc, in_plane, normal); the minus sign makes d point away from b.
    local = np.array([
        -bond_a * math.cos(angle),
        bond_a * math.sin(angle) * math.cos(dihedral),
        bond_a * math.sin(angle) * math.sin(dihedral),
    ])
    return c + local[0] * bc + local[1] * in_plane + local[2] * normal


def dihedral_deg(a, b, c, d) -> float:
    b0, b1, b2 = a - b, c - b, d - c
    b1 = b1 / np.linalg.norm(b1)
    v = b0 - np.dot(b0, b1) * b1
    w = b2 - np.dot(b2, b1) * b1
    return math.degrees(math.atan2(np.dot(np.cross(b1, v), w), np.dot(v, w)))


def heavy_atom_positions_a() -> dict[tuple[str, str], np.ndarray]:
    """Heavy atoms keyed by (residue, atom name), in Å."""
    ace_ch3 = np.array([0.0, 0.0, 0.0])
    ace_c = np.array([CH3_C_A, 0.0, 0.0])
    # Any point off the CH3-C axis fixes the frame; the CH3-C-N angle is the CA-C-N one.
    angle = math.radians(180.0 - CA_C_N_DEG)
    n = ace_c + C_N_A * np.array([math.cos(angle), math.sin(angle), 0.0])
    ca = place_atom(ace_ch3, ace_c, n, N_CA_A, C_N_CA_DEG, OMEGA_DEG)
    c = place_atom(ace_c, n, ca, CA_C_A, N_CA_C_DEG, PHI_DEG)
    nme_n = place_atom(n, ca, c, C_N_A, CA_C_N_DEG, PSI_DEG)
    nme_c = place_atom(ca, c, nme_n, N_CH3_A, C_N_CA_DEG, OMEGA_DEG)
    # Carbonyl O lies cis to the next residue's CA/CH3 when the peptide bond is trans.
    ace_o = place_atom(ca, n, ace_c, C_O_A, N_C_O_DEG, 0.0)
    ala_o = place_atom(nme_c, nme_n, c, C_O_A, N_C_O_DEG, 0.0)
    cb = place_atom(n, c, ca, CA_CB_A, N_CA_CB_DEG, N_C_CA_CB_DEG)
    return {
        ("ACE", "CH3"): ace_ch3, ("ACE", "C"): ace_c, ("ACE", "O"): ace_o,
        ("ALA", "N"): n, ("ALA", "CA"): ca, ("ALA", "C"): c, ("ALA", "O"): ala_o, ("ALA", "CB"): cb,
        ("NME", "N"): nme_n, ("NME", "C"): nme_c,
    }


def heavy_atom_topology(positions_a):
    topology = app.Topology()
    chain = topology.addChain("A")
    positions_nm = []
    residues = {}
    for (residue_name, atom_name), xyz_a in positions_a.items():
        if residue_name not in residues:
            residues[residue_name] = topology.addResidue(residue_name, chain)
        element = app.Element.getBySymbol(atom_name[0])
        topology.addAtom(atom_name, element, residues[residue_name])
        positions_nm.append(openmm.Vec3(*(xyz_a / 10.0)))
    topology.createStandardBonds()
    return topology, positions_nm * unit.nanometer


def atom_xyz(topology, positions_nm, residue_name, atom_name) -> np.ndarray:
    for atom in topology.atoms():
        if atom.residue.name == residue_name and atom.name == atom_name:
            return np.array(positions_nm[atom.index].value_in_unit(unit.nanometer))
    raise KeyError((residue_name, atom_name))


def main() -> int:
    forcefield = app.ForceField(*FORCEFIELD_FILES)
    topology, positions = heavy_atom_topology(heavy_atom_positions_a())
    modeller = app.Modeller(topology, positions)
    modeller.addHydrogens(forcefield)
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    integrator = openmm.VerletIntegrator(1.0 * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(modeller.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1e-3, 0)
    state = context.getState(getEnergy=True, getPositions=True)
    positions = state.getPositions()

    get = lambda residue, atom: atom_xyz(modeller.topology, positions, residue, atom)
    phi = dihedral_deg(get("ACE", "C"), get("ALA", "N"), get("ALA", "CA"), get("ALA", "C"))
    psi = dihedral_deg(get("ALA", "N"), get("ALA", "CA"), get("ALA", "C"), get("NME", "N"))
    ca = get("ALA", "CA")
    # L-alanine is S at CA: with N > C(=O) > CB by priority, (N-CA)·((C-CA)×(CB-CA)) > 0.
    chirality = np.dot(get("ALA", "N") - ca, np.cross(get("ALA", "C") - ca, get("ALA", "CB") - ca))
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    print(f"atoms={modeller.topology.getNumAtoms()} bonds={modeller.topology.getNumBonds()} "
          f"phi={phi:.1f} deg psi={psi:.1f} deg energy={energy:.2f} kJ/mol")
    if modeller.topology.getNumAtoms() != 22 or phi >= 0 or chirality <= 0:
        print("error: expected 22 atoms, phi < 0 and L-alanine", file=sys.stderr)
        return 1
    with open(OUTPUT_PDB, "w") as handle:
        app.PDBFile.writeFile(modeller.topology, positions, handle)
    print(f"wrote {OUTPUT_PDB}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
