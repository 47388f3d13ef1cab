"""Target systems: what p(x) ∝ exp(-u(x)) is sampled, and the OpenMM system that samples it.

A :class:`Toy2DSystem` is a potential energy E(x, y) in kJ/mol over positions in nm, given as an
expression string. The same string drives both sides of every comparison: OpenMM integrates it as a
``CustomExternalForce`` and torch evaluates it (through the whitelist parser) for flows and reweighting.

Reduced energies are u = E / kT (dimensionless), with kT in kJ/mol at the temperature in K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from boltzflow.cvs import StateBox, dihedral_angles, state_box
from boltzflow.expression import Expression, parse_expression
from boltzflow.units import MOLAR_GAS_CONSTANT_KJ_MOL_K, kt_kj_mol  # noqa: F401 (re-exported)



@dataclass(frozen=True)
class Toy2DSystem:
    """A particle in a 2D potential E(x, y); z is held near 0 by a harmonic restraint in MD only.

    The restraint is separable, so the x-y marginal of the MD samples is exactly
    ∝ exp(-E(x, y) / kT); every energy and free energy reported refers to E(x, y) alone.
    """

    name: str
    energy_expression: str
    temperatures_k: tuple[float, ...]
    states: tuple[StateBox, ...]
    bounds: dict[str, tuple[float, float]] | None = None
    cvs: tuple[str, ...] = ("x", "y")
    expression: Expression = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "expression", parse_expression(self.energy_expression, self.cvs))

    @property
    def dim(self) -> int:
        return len(self.cvs)

    @property
    def target_temperature_k(self) -> float:
        return self.temperatures_k[0]

    def energy_kj_mol(self, xy):
        """E(x, y) in kJ/mol for positions of shape [..., 2] in nm (torch tensor or numpy array)."""
        import torch

        as_numpy = isinstance(xy, np.ndarray)
        tensor = torch.as_tensor(xy, dtype=torch.float64) if as_numpy else xy
        energy = self.expression(x=tensor[..., 0], y=tensor[..., 1])
        energy = energy.expand(tensor.shape[:-1])  # a constant expression still has one value per point
        return energy.detach().numpy() if as_numpy else energy

    def reduced_energy(self, xy, temperature_k: float | None = None):
        """u = E / kT at ``temperature_k`` (default: the target temperature); dimensionless."""
        temperature_k = self.target_temperature_k if temperature_k is None else temperature_k
        return self.energy_kj_mol(xy) / kt_kj_mol(temperature_k)

    def cv_values(self, xy: np.ndarray) -> dict[str, np.ndarray]:
        return {cv: xy[:, i] for i, cv in enumerate(self.cvs)}

    def openmm_system(self, n_walkers: int, mass_amu: float, z_spring_kj_mol_nm2: float):
        """An OpenMM System of ``n_walkers`` non-interacting particles, each feeling E(x, y) + k z² / 2."""
        import openmm

        system = openmm.System()
        # Lepton definitions ("main; a = ...") follow the main expression: add the restraint to main.
        main, separator, definitions = self.energy_expression.partition(";")
        force = openmm.CustomExternalForce(
            f"({main}) + 0.5*{z_spring_kj_mol_nm2!r}*z^2{separator}{definitions}")
        for index in range(n_walkers):
            system.addParticle(mass_amu)
            force.addParticle(index, [])
        system.addForce(force)
        return system


def toy_system_from_config(name: str, system_config: dict) -> Toy2DSystem:
    """Build a toy system from its validated config block (see config/schema.yaml).

    Stages receive only the keys they depend on (so that Snakemake reruns exactly what a change
    affects): ``states`` and ``bounds`` may be absent.
    """
    states = [StateBox(state, state_box(f"states.{state}", box, ("x", "y")))
              for state, box in system_config.get("states", {}).items()]
    bounds = system_config.get("bounds")
    return Toy2DSystem(
        name=name,
        energy_expression=system_config["energy"],
        temperatures_k=tuple(float(t) for t in system_config["temperatures"]),
        states=tuple(states),
        bounds={cv: (float(lo), float(hi)) for cv, (lo, hi) in bounds.items()} if bounds else None,
    )


@dataclass(frozen=True)
class MoleculeSystem:
    """A molecule from a PDB file with an OpenMM force field (implicit solvent or vacuum, no cutoff).

    Positions are Cartesian, [..., n_atoms, 3] in nm. The CVs are dihedral angles given by four atom
    indices each, reported in ``cv_units`` (degrees or radians) in [-half turn, half turn). Energies
    come from OpenMM (``boltzflow.molecules.load_molecule`` builds the OpenMM objects); this class only
    describes the system, so the analysis stages need no OpenMM.
    """

    name: str
    pdb_path: str
    forcefield: tuple[str, ...]
    constraints: str
    temperatures_k: tuple[float, ...]
    cv_atoms: dict[str, tuple[int, int, int, int]]
    cv_units: str
    states: tuple[StateBox, ...]

    @property
    def cvs(self) -> tuple[str, ...]:
        return tuple(self.cv_atoms)

    @property
    def target_temperature_k(self) -> float:
        return self.temperatures_k[0]

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        half_turn = 180.0 if self.cv_units == "degrees" else math.pi
        return {cv: (-half_turn, half_turn) for cv in self.cvs}

    def cv_values(self, positions_nm: np.ndarray) -> dict[str, np.ndarray]:
        """Dihedral CVs in ``cv_units`` for positions [n, n_atoms, 3] in nm."""
        quads = np.array([self.cv_atoms[cv] for cv in self.cvs])
        angles = dihedral_angles(np.asarray(positions_nm, dtype=np.float64), quads)
        if self.cv_units == "degrees":
            angles = np.degrees(angles)
        # The upper edge belongs to the lower end, so that every angle falls in one half-open state box.
        half_turn = self.bounds[self.cvs[0]][1]
        angles = np.where(angles >= half_turn, angles - 2 * half_turn, angles)
        return {cv: angles[:, i] for i, cv in enumerate(self.cvs)}


def molecule_system_from_config(name: str, system_config: dict) -> MoleculeSystem:
    cvs = tuple(system_config.get("cvs", {}))
    states = [StateBox(state, state_box(f"states.{state}", box, cvs))
              for state, box in system_config.get("states", {}).items()]
    return MoleculeSystem(
        name=name,
        pdb_path=system_config["pdb"],
        forcefield=tuple(system_config["forcefield"]),
        constraints=system_config["constraints"],
        temperatures_k=tuple(float(t) for t in system_config["temperatures"]),
        cv_atoms={cv: tuple(int(i) for i in atoms) for cv, atoms in system_config.get("cvs", {}).items()},
        cv_units=system_config.get("cv_units", "degrees"),
        states=tuple(states),
    )


def system_from_config(name: str, system_config: dict):
    """A :class:`Toy2DSystem` or :class:`MoleculeSystem`, by the config block's ``type``."""
    if system_config["type"] == "molecule":
        return molecule_system_from_config(name, system_config)
    return toy_system_from_config(name, system_config)
