"""How far the tetrahedral centres of a molecule stray towards their mirror image in hot Langevin MD, for a
chirality restraint of K kJ/mol at planarity: the check of ``boltzflow.stereochemistry``, measured.

    python benchmarks/chirality_excursions.py [--temperatures 1200 1500 2000] [--restraints 50 150] [--ns 2]
                                              [--pdb data/alanine_dipeptide.pdb] [--seed 1]

One replica per (temperature, K): Langevin middle integrator, 2 fs, friction 1/ps, Reference platform, the
molecule of ``--pdb`` in amber99sbildn + OBC with its chirality restraint (``chirality_k`` set to K). Every
picosecond the chirality sχ of each centre in the PDB's handedness is taken. Printed: frames with sχ < 0 (a
centre past planar), frames below -INVERTED_CHIRALITY (an inversion as the MD check counts it), the lowest
sχ, and wall seconds. A frame below the threshold restarts the replica from the PDB, so later frames count.
"""

import argparse
import time
from pathlib import Path

import numpy as np
from openmm import unit

from boltzflow.molecules import langevin_integrator, load_molecule, make_context
from boltzflow.stereochemistry import INVERTED_CHIRALITY, chirality, tetrahedral_centres

ROOT = Path(__file__).resolve().parents[1]


def excursions(molecule, temperature_k: float, restraint_kj_mol: float, ns: float, seed: int):
    centres, neighbours = tetrahedral_centres(molecule.bonds, molecule.n_atoms)
    sign = np.sign(chirality(molecule.positions_nm, centres, neighbours))
    integrator = langevin_integrator(temperature_k, 1.0, 2.0, seed)
    context = make_context(molecule.system, "Reference", None, integrator)
    context.setParameter("chirality_k", restraint_kj_mol)
    context.setPositions(molecule.positions_nm)
    context.setVelocitiesToTemperature(temperature_k * unit.kelvin, seed)
    past_planar = inverted = 0
    lowest = np.inf
    for frame in range(int(ns * 1000)):
        integrator.step(500)  # 1 ps
        x = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        s_chi = chirality(np.asarray(x), centres, neighbours) * sign
        lowest = min(lowest, float(s_chi.min()))
        past_planar += bool((s_chi < 0).any())
        if (s_chi < -INVERTED_CHIRALITY).any():
            inverted += 1
            context.setPositions(molecule.positions_nm)
            context.setVelocitiesToTemperature(temperature_k * unit.kelvin, seed + frame + 1)
    return past_planar, inverted, lowest


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pdb", default=str(ROOT / "data/alanine_dipeptide.pdb"))
    parser.add_argument("--temperatures", nargs="+", type=float, default=[1200.0, 1500.0, 2000.0])
    parser.add_argument("--restraints", nargs="+", type=float, default=[50.0, 150.0])
    parser.add_argument("--ns", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    molecule = load_molecule(args.pdb)
    print(f"{'T (K)':>7}{'K (kJ/mol)':>12}{'ns':>6}{'sχ < 0':>9}{f'sχ < -{INVERTED_CHIRALITY:g}':>10}"
          f"{'lowest sχ':>11}{'wall s':>8}")
    for temperature_k in args.temperatures:
        for restraint in args.restraints:
            start = time.perf_counter()
            past_planar, inverted, lowest = excursions(molecule, temperature_k, restraint, args.ns, args.seed)
            print(f"{temperature_k:>7g}{restraint:>12g}{args.ns:>6g}{past_planar:>9d}{inverted:>10d}{lowest:>11.3f}"
                  f"{time.perf_counter() - start:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
