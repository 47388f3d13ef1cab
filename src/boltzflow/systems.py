"""Target systems: what p(x) ∝ exp(-u(x)) is sampled, and the OpenMM system that samples it.

Every system kind implements the :class:`Target` protocol; stage code talks only to it. The one place
that asks which kind a config block describes is :func:`system_from_config` (and the schema).

A :class:`Toy2DSystem` is a potential energy E(x, y) in kJ/mol over positions in nm, given as an
expression string. The same string drives both sides of every comparison: OpenMM integrates it as a
``CustomExternalForce`` and torch evaluates it (through the whitelist parser) for flows and reweighting.

Reduced energies are u = E / kT (dimensionless), with kT in kJ/mol at the temperature in K.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from boltzflow.cvs import HALF_TURN, State, dihedral_angles, state_boxes
from boltzflow.expression import Expression, parse_expression
from boltzflow.units import kt_kj_mol


@dataclass(frozen=True)
class ModelCoordinates:
    """MD positions in a model's coordinates: the map back to positions, y (float64 tensor [n, dim]),
    which columns are angles on the circle, and their circular mean (0 elsewhere)."""

    coordinate_map: Any
    y: Any
    circular: Any
    circular_mean: Any


class Target(Protocol):
    """What every system kind provides to the stages (the idea of bgflow's ``Energy``).

    Positions are in nm, in the shape ``position_dims`` names after the sample axis; reduced energies are
    u = E / kT (dimensionless) at the target temperature, the first of ``temperatures_k``.
    """

    name: str
    temperatures_k: tuple[float, ...]
    states: tuple[State, ...]

    @property
    def cvs(self) -> tuple[str, ...]: ...
    @property
    def cv_units(self) -> str: ...
    @property
    def bounds(self) -> dict[str, tuple[float, float]] | None: ...
    @property
    def target_temperature_k(self) -> float: ...
    #: "langevin" (independent walkers at each temperature), "replica_exchange" (over the whole ladder) or
    #: "trajectories" (MD a user already has, read from files per temperature).
    md_method: str
    #: True if positions are the CVs of a 2D density that ``reduced_energy`` (numpy [n, 2] → [n]) can
    #: integrate on a grid (``stages.quadrature``): the run then carries the exact answer.
    exact_quadrature: bool
    #: True if positions are the atoms of a topology (``load_molecule().topology``): model samples are then
    #: also written as AMBER trajectories that mdtraj and VMD read.
    atomistic: bool
    #: Dimensions and coordinates of one sample's positions; long names of positions, ln q and ln Z (what
    #: the density and the partition function are over).
    position_dims: tuple[str, ...]
    position_coords: dict
    positions_long_name: str
    log_q_long_name: str
    log_z_long_name: str

    def cv_values(self, positions_nm: np.ndarray) -> dict[str, np.ndarray]: ...

    def energy(self, workers: int = 1) -> contextlib.AbstractContextManager[Callable]:
        """A context giving u(positions) at the target temperature: float64 tensor [b, ...] → [b],
        differentiable (molecules: OpenMM forces, in ``workers`` processes)."""

    def model_coordinates(self, positions_nm, wrap_all_torsions: bool) -> ModelCoordinates:
        """The coordinates a model learns from MD positions: x-y for a toy; internal coordinates with narrow
        torsions unwrapped (and, with ``wrap_all_torsions``, every torsion) for a molecule."""

    def md_settings(self, block: dict) -> Any:
        """The typed settings of this kind's ``md`` config block."""

    def check_backend(self) -> None:
        """Checks that need the simulation backend (a molecule's force field matches every residue), raising
        a one-line error; run before any work starts."""



@dataclass(frozen=True)
class Toy2DSystem:
    """A particle in a 2D potential E(x, y); z is held near 0 by a harmonic restraint in MD only.

    The restraint is separable, so the x-y marginal of the MD samples is exactly
    ∝ exp(-E(x, y) / kT); every energy and free energy reported refers to E(x, y) alone.
    """

    name: str
    energy_expression: str
    temperatures_k: tuple[float, ...]
    states: tuple[State, ...]
    bounds: dict[str, tuple[float, float]] | None = None
    cvs: tuple[str, ...] = ("x", "y")
    expression: Expression = field(init=False, repr=False, compare=False)

    md_method = "langevin"
    #: Its density can be integrated on a grid: the run carries the exact answer (estimator ``quadrature``).
    exact_quadrature = True
    atomistic = False
    cv_units = "nm"
    position_dims = ("cv",)
    positions_long_name = "model sample"
    log_q_long_name = "model log-density ln q(x) (x in nm)"
    log_z_long_name = "ln Z = ln ∫ exp(-u) dx dy, x and y in nm"

    @property
    def position_coords(self) -> dict:
        return {"cv": list(self.cvs)}

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

    @contextlib.contextmanager
    def energy(self, workers: int = 1) -> Iterator[Callable]:
        """u(x, y) at the target temperature from the parsed expression (``workers`` is not needed)."""
        yield lambda xy: self.reduced_energy(xy.double())

    def model_coordinates(self, positions_nm, wrap_all_torsions: bool = False) -> ModelCoordinates:
        import torch

        from boltzflow.generators import CartesianMap

        y = torch.as_tensor(np.asarray(positions_nm), dtype=torch.float64)
        none = torch.zeros(self.dim, dtype=torch.bool)
        return ModelCoordinates(CartesianMap(self.dim), y, none, torch.zeros(self.dim, dtype=torch.float64))

    def md_settings(self, block: dict):
        from boltzflow.settings import LangevinSettings

        return LangevinSettings.from_config(block)

    def check_backend(self) -> None:
        """Nothing to check: the expression was parsed when the config was validated."""

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
    # x and y are not periodic: an interval with lo > hi is an error, not a wrap-around.
    states = [State(state, state_boxes(f"states.{state}", spec, ("x", "y")))
              for state, spec in system_config.get("states", {}).items()]
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
    describes the system, so the analysis stages need no OpenMM. ``md_method`` is ``replica_exchange`` (MD
    run here) or ``trajectories`` (MD a user already has, ``md.source: trajectories``).
    """

    name: str
    pdb_path: str
    forcefield: tuple[str, ...]
    constraints: str
    temperatures_k: tuple[float, ...]
    cv_atoms: dict[str, tuple[int, int, int, int]]
    cv_units: str
    states: tuple[State, ...]
    md_method: str = "replica_exchange"

    exact_quadrature = False
    atomistic = True
    position_dims = ("atom", "spatial")
    position_coords = {"spatial": ["x", "y", "z"]}
    positions_long_name = "model sample, Cartesian, canonical frame"
    log_q_long_name = ("model log-density ln q over internal coordinates minus their log-Jacobian "
                       "(NaN: outside the map)")
    log_z_long_name = "ln Z over internal coordinates (bonds nm, angles rad), rigid-body motion excluded"

    @property
    def cvs(self) -> tuple[str, ...]:
        return tuple(self.cv_atoms)

    @property
    def target_temperature_k(self) -> float:
        return self.temperatures_k[0]

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        half_turn = HALF_TURN[self.cv_units]
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

    def load_molecule(self):
        """The OpenMM side of the system (topology, System, PDB positions)."""
        from boltzflow.molecules import load_molecule

        return load_molecule(self.pdb_path, self.forcefield, self.constraints)

    @contextlib.contextmanager
    def energy(self, workers: int = 1) -> Iterator[Callable]:
        """u(x) at the target temperature from OpenMM (Reference platform), forces for the gradient."""
        from boltzflow.molecules import EnergyEvaluator, reduced_energy_function

        with EnergyEvaluator(self.load_molecule(), platform="Reference", n_workers=workers) as evaluator:
            yield reduced_energy_function(evaluator, kt_kj_mol(self.target_temperature_k))

    def model_coordinates(self, positions_nm, wrap_all_torsions: bool = False) -> ModelCoordinates:
        import torch

        from boltzflow.coordinates import InternalCoordinates, build_zmatrix
        from boltzflow.generators import InternalCoordinateMap
        from boltzflow.torsions import cut_window_centres, narrow_window_centres

        molecule = self.load_molecule()
        zmatrix = build_zmatrix(molecule.bonds, molecule.n_atoms, heavy=molecule.heavy)
        coordinates = InternalCoordinates(zmatrix)
        ic, _, _ = coordinates.to_internal(torch.as_tensor(np.asarray(positions_nm), dtype=torch.float64))
        if wrap_all_torsions:
            centres = cut_window_centres(ic, coordinates.is_torsion)
            circular = torch.zeros_like(coordinates.is_torsion)
            circular_mean = torch.zeros(coordinates.dim, dtype=torch.float64)
        else:
            centres, circular, mean_angle = narrow_window_centres(ic, coordinates.is_torsion)
            circular_mean = torch.where(circular, mean_angle, torch.zeros_like(mean_angle))
        coordinate_map = InternalCoordinateMap(zmatrix, centres)
        return ModelCoordinates(coordinate_map, coordinate_map.flow_coordinates(ic), circular, circular_mean)

    def md_settings(self, block: dict):
        """The replica exchange settings of the ``md`` block (without the keys that choose the MD's source)."""
        from boltzflow.settings import ReplicaExchangeSettings

        return ReplicaExchangeSettings(**{key: value for key, value in block.items() if key not in MD_SOURCE_KEYS})

    def check_backend(self) -> None:
        """Parametrize the molecule once and check its CVs against its bonds: a residue the force field cannot
        match, or a CV whose atoms are not a bonded chain, raises MoleculeError."""
        from boltzflow.molecules import check_dihedral_chains

        check_dihedral_chains(self.load_molecule(), self.cv_atoms)


#: The keys of a molecule's ``md`` block that say where its MD comes from, and the route of each source.
MD_SOURCE_KEYS = ("source", "files")
MD_METHODS = {"simulation": "replica_exchange", "trajectories": "trajectories"}


def molecule_system_from_config(name: str, system_config: dict) -> MoleculeSystem:
    cvs = tuple(system_config.get("cvs", {}))
    cv_units = system_config.get("cv_units", "degrees")
    # Every CV is a dihedral: an interval with lo > hi wraps around ±180° (±π).
    half_turns = {cv: HALF_TURN[cv_units] for cv in cvs}
    states = [State(state, state_boxes(f"states.{state}", spec, cvs, half_turns))
              for state, spec in system_config.get("states", {}).items()]
    return MoleculeSystem(
        name=name,
        pdb_path=system_config["pdb"],
        forcefield=tuple(system_config["forcefield"]),
        constraints=system_config["constraints"],
        temperatures_k=tuple(float(t) for t in system_config["temperatures"]),
        cv_atoms={cv: tuple(int(i) for i in atoms) for cv, atoms in system_config.get("cvs", {}).items()},
        cv_units=cv_units,
        states=tuple(states),
        md_method=MD_METHODS[system_config.get("md", {}).get("source", "simulation")],
    )


#: The system kind of each config ``type``: the one place that maps a config to a kind.
SYSTEM_KINDS = {"toy2d": toy_system_from_config, "molecule": molecule_system_from_config}


@dataclass(frozen=True)
class ConfigKeys:
    """Which keys of a system's config block each stage depends on, so that the workflow passes a stage
    only those (through ``params:``) and a change reruns exactly the stages it affects.

    ``target``: the target density (its energy); ``cvs``: the CVs and states; ``model``: what the model
    stages are given beyond the target. A molecule's model stages get its CVs and states, as they always
    have, though none of them uses those yet: a change of states reruns its models.
    """

    target: tuple[str, ...]
    cvs: tuple[str, ...]
    model: tuple[str, ...]


CONFIG_KEYS = {
    "toy2d": ConfigKeys(target=("type", "energy"), cvs=("states", "bounds"), model=()),
    "molecule": ConfigKeys(target=("type", "pdb", "forcefield", "constraints"), cvs=("cvs", "cv_units", "states"),
                           model=("cvs", "cv_units", "states")),
}


def config_keys(system_config: dict) -> ConfigKeys:
    return CONFIG_KEYS[system_config["type"]]


def system_from_config(name: str, system_config: dict) -> Target:
    """The :class:`Target` a system's config block describes, by its ``type``."""
    return SYSTEM_KINDS[system_config["type"]](name, system_config)
