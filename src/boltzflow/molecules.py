"""Molecules from PDB files: the one bridge between OpenMM and the rest of boltzflow.

Conventions, everywhere in this module:

* positions in nm, energies in kJ/mol, forces in kJ/(mol nm); arrays are float64 and shaped
  ``[n_samples, n_atoms, 3]`` for batches;
* forces are -dE/dx; reduced energies are u = E / kT (dimensionless), with kT in kJ/mol;
* atom indices are 0-based, in the order of the PDB file;
* a sample that OpenMM cannot evaluate (non-finite coordinates, an OpenMM exception, a non-finite energy
  or force) gets a NaN energy and NaN forces rather than an exception, so that one bad flow sample does
  not end a batch; callers drop or down-weight NaN rows.

Errors in the inputs a user controls (files, config keys) raise :class:`MoleculeError` with a one-line
message that starts with the config key, names the file and says what was expected.

torch is imported only inside :func:`reduced_energy_function`, so MD stages import this module without it.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

DEFAULT_FORCEFIELD_FILES = ("amber99sbildn.xml", "amber99_obc.xml")
CONSTRAINTS = {"none": None, "hbonds": app.HBonds, "allbonds": app.AllBonds, "hangles": app.HAngles}
PLATFORM_NAMES = ("Reference", "CPU", "CUDA", "OpenCL")


class MoleculeError(ValueError):
    """A molecule input (PDB file, force field, CV atoms, platform) is unusable; the message names the key."""


@dataclass(frozen=True, eq=False)
class Molecule:
    """A molecule ready for OpenMM: its topology, System and the positions of the PDB file.

    ``bonds`` are (i, j) atom-index pairs in topology order; ``heavy[i]`` is True unless atom i is a
    hydrogen. ``positions_nm`` is [n_atoms, 3] float64.
    """

    topology: app.Topology
    system: openmm.System
    positions_nm: np.ndarray
    bonds: list[tuple[int, int]]
    heavy: np.ndarray
    n_atoms: int
    pdb_path: Path


# ----------------------------------------------------------------------------------------------------------
# Loading


def load_molecule(
    pdb_path,
    forcefield_files=DEFAULT_FORCEFIELD_FILES,
    constraints: str = "none",
    hydrogen_mass_amu: float | None = None,
) -> Molecule:
    """Read a PDB file and parametrize it without cutoffs (vacuum or implicit solvent).

    ``constraints`` is one of none, hbonds, allbonds, hangles. ``hydrogen_mass_amu`` (None: element mass)
    repartitions mass from the bonded heavy atoms to hydrogens, which allows longer MD time steps.
    """
    pdb_path = Path(pdb_path)
    forcefield_files = tuple(forcefield_files)
    if constraints not in CONSTRAINTS:
        raise MoleculeError(
            f"molecule.constraints: expected one of {', '.join(CONSTRAINTS)}, got {constraints!r}")
    if hydrogen_mass_amu is not None and not hydrogen_mass_amu > 0:
        raise MoleculeError(
            f"molecule.hydrogen_mass_amu: expected a positive mass in amu, got {hydrogen_mass_amu!r}")

    pdb = _read_pdb(pdb_path)
    forcefield = _load_forcefield(forcefield_files)
    options = {}
    if hydrogen_mass_amu is not None:
        options["hydrogenMass"] = hydrogen_mass_amu * unit.amu
    try:
        system = forcefield.createSystem(
            pdb.topology, nonbondedMethod=app.NoCutoff, constraints=CONSTRAINTS[constraints],
            rigidWater=False, **options)
    except ValueError as error:
        raise MoleculeError(_describe_template_error(error, pdb.topology, pdb_path, forcefield_files)) from None

    positions_nm = np.array(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=np.float64)
    atoms = list(pdb.topology.atoms())
    bonds = [(bond.atom1.index, bond.atom2.index) for bond in pdb.topology.bonds()]
    restraint = chirality_restraint(bonds, positions_nm)
    if restraint is not None:
        system.addForce(restraint)
    return Molecule(
        topology=pdb.topology,
        system=system,
        positions_nm=positions_nm,
        bonds=bonds,
        heavy=np.array([atom.element is None or atom.element.symbol != "H" for atom in atoms]),
        n_atoms=len(atoms),
        pdb_path=pdb_path,
    )


#: The chirality restraint acts where a centre's chirality (its signed volume over the product of its three
#: bond lengths: about ±0.77 for a tetrahedron, 0 when planar) falls below this onset, as
#: CHIRALITY_RESTRAINT_KJ_MOL x (1 - chirality / onset)²: that times 1 at planarity, times 12.7 at the mirror image.
CHIRALITY_RESTRAINT_ONSET = 0.3
CHIRALITY_RESTRAINT_KJ_MOL = 50.0


def chirality_restraint(bonds: list[tuple[int, int]], positions_nm: np.ndarray) -> openmm.CustomCompoundBondForce | None:
    """A flat-bottom restraint that keeps every tetrahedral centre in the handedness of ``positions_nm``
    (see :mod:`boltzflow.stereochemistry` for why); None for a molecule without such centres.

    For each centre c with lowest-numbered neighbours a, b, d, the chirality
    χ = (a-c)·((b-c)×(d-c)) / (|a-c| |b-c| |d-c|) is about ±0.77 at the tetrahedral geometry, 0 when c
    is planar and of the other sign in the mirror image; s is its sign in the PDB structure. The energy
    is K (1 - s χ / 0.3)² where s χ < 0.3 and 0 elsewhere: 50 kJ/mol at planarity and 640 kJ/mol in the
    mirror image, so no replica can invert. The onset needs all three substituents bent about 13° towards
    planarity at once (about 39 kJ/mol, 16 kT at 300 K, for alanine's methyl groups), so thermal motion at
    the target temperature does not reach it and the target ensemble is the force field's; the wall is
    soft enough (K = 50 kJ/mol) for 2 fs steps. Every energy of the molecule (MD, MBAR, the models'
    weights) includes it.
    """
    from boltzflow.stereochemistry import chirality, tetrahedral_centres

    centres, neighbours = tetrahedral_centres(bonds, len(positions_nm))
    if not len(centres):
        return None
    reference = chirality(positions_nm, centres, neighbours)
    distances = "distance(p1,p2)*distance(p1,p3)*distance(p1,p4)"
    volume = ("(x2-x1)*((y3-y1)*(z4-z1)-(z3-z1)*(y4-y1)) - (y2-y1)*((x3-x1)*(z4-z1)-(z3-z1)*(x4-x1))"
              " + (z2-z1)*((x3-x1)*(y4-y1)-(y3-y1)*(x4-x1))")
    force = openmm.CustomCompoundBondForce(
        4, f"chirality_k*step(excess)*excess^2; excess = 1 - chi/onset; chi = ({volume})/({distances})")
    force.addGlobalParameter("chirality_k", CHIRALITY_RESTRAINT_KJ_MOL)
    force.addPerBondParameter("onset")  # s * 0.3
    force.setName("ChiralityRestraint")
    for centre, (a, b, d), chi in zip(centres, neighbours, reference):
        if abs(chi) < CHIRALITY_RESTRAINT_ONSET + 0.05:  # 300 K frames of alanine dipeptide reach 0.43
            raise MoleculeError(f"molecule.pdb: atom {centre} and its bonded atoms {a}, {b}, {d} are nearly coplanar in "
                                f"the PDB structure (chirality {chi:.2f}, a tetrahedron has ±0.77); it needs a 3D structure")
        force.addBond([int(centre), int(a), int(b), int(d)], [float(np.sign(chi)) * CHIRALITY_RESTRAINT_ONSET])
    return force


def _read_pdb(pdb_path: Path) -> app.PDBFile:
    prefix = f"molecule.pdb: cannot read '{pdb_path}' as a PDB file"
    if not pdb_path.is_file():
        raise MoleculeError(f"{prefix}: no such file")
    try:
        pdb = app.PDBFile(str(pdb_path))
    except IndexError:
        # OpenMM's reader indexes the first model's positions, which a file without atoms lacks.
        raise MoleculeError(f"{prefix}: no ATOM/HETATM records") from None
    except Exception as error:  # any parse failure means the same thing to the user
        raise MoleculeError(f"{prefix}: {_first_line(error)}") from None
    if pdb.topology.getNumAtoms() == 0:
        raise MoleculeError(f"{prefix}: no ATOM/HETATM records")
    return pdb


def _load_forcefield(forcefield_files: tuple[str, ...]) -> app.ForceField:
    try:
        return app.ForceField(*forcefield_files)
    except ValueError as error:
        missing = re.search(r'Could not locate file "([^"]+)"', str(error))
        if missing:
            raise MoleculeError(
                f"molecule.forcefield: {missing.group(1)!r} is not a force-field file OpenMM knows") from None
        raise MoleculeError(f"molecule.forcefield: cannot load {', '.join(forcefield_files)}: "
                            f"{_first_line(error)}") from None
    except Exception as error:  # malformed XML and the like
        raise MoleculeError(f"molecule.forcefield: cannot load {', '.join(forcefield_files)}: "
                            f"{_first_line(error)}") from None


#: What a user can do about a residue without a template: boltzflow parametrizes nothing itself.
NO_TEMPLATE_ADVICE = ("boltzflow knows only the residues the force-field files have templates for: for a ligand, "
                      "build an OpenMM XML for it elsewhere (openmmforcefields, GAFF or SMIRNOFF) and add it to "
                      "the forcefield list")


def _describe_template_error(error, topology, pdb_path, forcefield_files) -> str:
    text = _first_line(error)
    match = re.search(r"residue (\d+) \(([^)]*)\)", text)
    if not match:
        return f"molecule.pdb: cannot parametrize '{pdb_path}' with {', '.join(forcefield_files)}: {text}"
    # OpenMM counts residues from 0; the user knows them by their PDB residue number.
    residue = list(topology.residues())[int(match.group(1))]
    # OpenMM's guess at the cause sits between the residue and its FAQ link, e.g. 'The set of atoms
    # matches ALA, but the residue has no bonds between its atoms'; it is worth a place on the line.
    guess = re.search(r"\)\.\s+(.+?)\s*(For more information|$)", text)
    first_sentence = guess.group(1).split(".  ")[0].strip().rstrip(".") if guess else ""
    hint = f" ({first_sentence})" if first_sentence else ""
    return (f"molecule.pdb: residue {residue.id} ({residue.name}) of '{pdb_path}' matches no template in "
            f"{', '.join(forcefield_files)}{hint}; {NO_TEMPLATE_ADVICE}")


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def validate_dihedrals(dihedrals: dict[str, list[int]], n_atoms: int) -> None:
    """Check that each CV ``name: [i, j, k, l]`` names four distinct 0-based atom indices < n_atoms."""
    for name, indices in dihedrals.items():
        key = f"cvs.{name}"
        if len(indices) != 4 or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool)
                                        for i in indices):
            raise MoleculeError(f"{key}: expected four integer atom indices, got {list(indices)}")
        for index in indices:
            if not 0 <= index < n_atoms:
                raise MoleculeError(f"{key}: atom index {index} is out of range "
                                    f"(expected 0..{n_atoms - 1} for {n_atoms} atoms)")
        if len(set(indices)) != 4:
            raise MoleculeError(f"{key}: atom indices must be distinct, got {list(indices)}")


def atom_label(topology: app.Topology, index: int) -> str:
    """An atom as a chemist names it: residue name and PDB residue number, atom name ('ALA2 CA')."""
    atom = list(topology.atoms())[index]
    return f"{atom.residue.name}{atom.residue.id} {atom.name}"


def dihedral_label(topology: app.Topology, atoms) -> str:
    """The four atoms of a dihedral by name: 'ACE1 C – ALA2 N – ALA2 CA – ALA2 C'."""
    return " – ".join(atom_label(topology, index) for index in atoms)


def check_dihedral_chains(molecule: Molecule, dihedrals: dict[str, tuple[int, ...]]) -> None:
    """Each CV ``name: [a, b, c, d]`` (valid indices) must be a bonded chain: bonds a-b, b-c and c-d.

    Any four atoms have a dihedral angle, so a wrong index runs without complaint: the common slip,
    1-based PDB serial numbers for 0-based indices, turns alanine dipeptide's φ [4, 6, 8, 10] into
    [5, 7, 9, 11] (O, H, HA, O), and every state and free energy would be about that angle.
    """
    bonded = {frozenset(bond) for bond in molecule.bonds}
    topology = molecule.topology
    for name, atoms in dihedrals.items():
        for a, b in zip(atoms, atoms[1:]):
            if frozenset((a, b)) not in bonded:
                raise MoleculeError(
                    f"molecule.cvs.{name}: atoms {a} ({atom_label(topology, a)}) and {b} ({atom_label(topology, b)}) "
                    f"are not bonded, so {list(atoms)} ({dihedral_label(topology, atoms)}) is not a bonded chain "
                    "a-b-c-d; atom indices are 0-based (a PDB file's serial numbers usually start at 1)")


# ----------------------------------------------------------------------------------------------------------
# Platforms


def available_platforms() -> list[str]:
    """Names of the OpenMM platforms whose plugins loaded here (a GPU platform may still lack a device)."""
    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


def platform_properties(platform: str, threads: int) -> dict[str, str]:
    """Properties that pin a platform's thread use; only the CPU platform spawns threads of its own."""
    return {"Threads": str(int(threads))} if platform == "CPU" else {}


def select_platform(name: str, molecule: Molecule, log=print, cpu_threads: int = 1,
                    budget_s: float = 0.5) -> str:
    """Return the OpenMM platform to run ``molecule`` on: ``name`` itself, or the fastest one for ``auto``.

    ``auto`` runs short Langevin trajectories on each available platform within ``budget_s`` in total and
    logs steps/second. The CPU platform is timed with ``cpu_threads`` threads, which should be the thread
    count the MD run will get from its rule (rules/md.smk gives 1): timed with every core, CPU would win
    choices it then loses with its real share, and it would compete with the other jobs while timing.
    """
    if name not in (*PLATFORM_NAMES, "auto"):
        raise MoleculeError(f"md.platform: expected one of {', '.join(PLATFORM_NAMES)}, auto; got {name!r}")
    available = [p for p in available_platforms() if p in PLATFORM_NAMES]
    if name != "auto":
        if name not in available:
            raise MoleculeError(
                f"md.platform: {name!r} is not available here (available: {', '.join(available)})")
        try:
            _time_langevin_steps(molecule.system, molecule.positions_nm, name, cpu_threads, budget_s=0.0)
        except openmm.OpenMMException as error:
            raise MoleculeError(f"md.platform: {name!r} cannot run here: {_first_line(error)}") from None
        return name

    steps_per_second = {}
    for platform in available:
        try:
            steps_per_second[platform] = _time_langevin_steps(
                molecule.system, molecule.positions_nm, platform, cpu_threads, budget_s / len(available))
        except openmm.OpenMMException as error:
            log(f"md.platform auto: {platform} cannot run here ({_first_line(error)})")
    if not steps_per_second:
        raise MoleculeError(f"md.platform: none of {', '.join(available)} can run '{molecule.pdb_path}'")
    fastest = max(steps_per_second, key=steps_per_second.get)
    timings = ", ".join(f"{p} {rate:.0f} steps/s" for p, rate in steps_per_second.items())
    log(f"md.platform auto: {timings} ({molecule.n_atoms} atoms, CPU with {cpu_threads} threads) -> {fastest}")
    return fastest


def langevin_integrator(temperature_k: float, friction_per_ps: float, timestep_fs: float,
                        seed: int | None = None) -> openmm.LangevinMiddleIntegrator:
    """A Langevin middle integrator; ``seed`` (a positive int) fixes its random stream, None lets OpenMM pick."""
    integrator = openmm.LangevinMiddleIntegrator(temperature_k * unit.kelvin, friction_per_ps / unit.picosecond,
                                                 timestep_fs * unit.femtosecond)
    if seed is not None:
        integrator.setRandomNumberSeed(seed)
    return integrator


def make_context(system: openmm.System, platform: str, properties: dict[str, str] | None = None,
                 integrator: openmm.Integrator | None = None) -> openmm.Context:
    """An OpenMM Context of ``system`` on the platform named ``platform``, with platform ``properties``.

    Without ``integrator`` the Context is for evaluating energies and forces only: it gets a Verlet
    integrator that never steps (a Context needs one all the same).
    """
    if integrator is None:
        integrator = openmm.VerletIntegrator(1 * unit.femtosecond)
    return openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform), dict(properties or {}))


def _time_langevin_steps(system, positions_nm, platform, threads, budget_s) -> float:
    """Steps per second of a 1 fs Langevin run at 300 K, after a few untimed steps (kernel compilation)."""
    integrator = langevin_integrator(300.0, 1.0, 1.0)
    context = make_context(system, platform, platform_properties(platform, threads), integrator)
    context.setPositions(positions_nm)
    integrator.step(5)
    context.getState(getEnergy=True)
    steps, start = 0, time.perf_counter()
    chunk = 10
    while True:
        integrator.step(chunk)
        context.getState(getEnergy=True)  # steps may run asynchronously on GPUs; wait for them
        steps += chunk
        elapsed = time.perf_counter() - start
        if elapsed >= budget_s:
            return steps / max(elapsed, 1e-9)
        chunk = min(chunk * 2, 10000)


# ----------------------------------------------------------------------------------------------------------
# Energies and forces


def _energy_context(system_xml: str, platform: str, threads: int) -> openmm.Context:
    """The Context an evaluator (or one of its workers) evaluates energies and forces with."""
    system = openmm.XmlSerializer.deserialize(system_xml)
    return make_context(system, platform, platform_properties(platform, threads))


def _evaluate(context: openmm.Context, positions_nm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_samples, n_atoms, _ = positions_nm.shape
    energy_kj_mol = np.full(n_samples, np.nan)
    forces_kj_mol_nm = np.full((n_samples, n_atoms, 3), np.nan)
    for k in range(n_samples):
        sample = positions_nm[k]
        # Skipping non-finite samples here avoids relying on each platform to raise for them.
        if not np.isfinite(sample).all():
            continue
        try:
            context.setPositions(sample)
            state = context.getState(getEnergy=True, getForces=True)
        except openmm.OpenMMException:
            continue
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        if math.isfinite(energy) and np.isfinite(forces).all():
            energy_kj_mol[k] = energy
            forces_kj_mol_nm[k] = forces
    return energy_kj_mol, forces_kj_mol_nm


# One Context per worker process, built by the pool initializer.
_worker_context: openmm.Context | None = None


def _init_worker(system_xml: str, platform: str, threads: int) -> None:
    global _worker_context
    _worker_context = _energy_context(system_xml, platform, threads)


def _evaluate_in_worker(positions_nm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _evaluate(_worker_context, positions_nm)


class _SpawnProcessWithoutMain(multiprocessing.context.SpawnProcess):
    """A spawned process that does not re-import the parent's main script.

    Spawn re-runs the main script in every child unless its top-level code sits under
    ``if __name__ == "__main__"``; Snakemake ``script:`` files have no such guard, so each worker would
    rerun the whole stage (truncating its log). The workers need only this module, which is importable
    from the ``sys.path`` the child inherits, so the main script is hidden while the child starts.
    """

    def start(self):
        main = sys.modules["__main__"]
        saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__}
        main.__dict__.pop("__file__", None)
        main.__spec__ = None
        try:
            super().start()
        finally:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


class _SpawnWithoutMainContext(multiprocessing.context.SpawnContext):
    Process = _SpawnProcessWithoutMain


class EnergyEvaluator:
    """Potential energies and forces of batches of configurations, with one OpenMM Context per worker.

    ``evaluator(positions_nm)`` takes [N, n_atoms, 3] positions in nm and returns
    ``(energy_kj_mol [N], forces_kj_mol_nm [N, n_atoms, 3])``, float64; see the module docstring for NaN rows.

    With ``n_workers > 1`` the batch is split into chunks evaluated by a pool of spawned processes (never
    forked: forking a process whose torch or OpenMM threads are running can deadlock the child; and
    without re-running the caller's main script, see :class:`_SpawnProcessWithoutMain`). Each
    worker uses ``threads`` threads on the CPU platform. Close the evaluator (or use it as a context
    manager) to stop the workers.
    """

    def __init__(self, molecule_or_system_xml, platform: str = "Reference", n_workers: int = 1,
                 threads: int = 1):
        if isinstance(molecule_or_system_xml, Molecule):
            system_xml = openmm.XmlSerializer.serialize(molecule_or_system_xml.system)
        elif isinstance(molecule_or_system_xml, openmm.System):
            system_xml = openmm.XmlSerializer.serialize(molecule_or_system_xml)
        else:
            system_xml = str(molecule_or_system_xml)
        if platform not in available_platforms():
            raise MoleculeError(f"md.platform: {platform!r} is not available here "
                                f"(available: {', '.join(available_platforms())})")
        if int(n_workers) < 1:
            raise ValueError(f"n_workers must be at least 1, got {n_workers}")
        self.platform = platform
        self.n_workers = int(n_workers)
        self.threads = int(threads)
        self.n_atoms = openmm.XmlSerializer.deserialize(system_xml).getNumParticles()
        self.n_samples_evaluated = 0
        self.seconds_evaluating = 0.0
        self._context = None
        self._pool = None
        if self.n_workers == 1:
            self._context = _energy_context(system_xml, platform, self.threads)
        else:
            self._pool = ProcessPoolExecutor(
                max_workers=self.n_workers, mp_context=_SpawnWithoutMainContext(),
                initializer=_init_worker, initargs=(system_xml, platform, self.threads))

    def __call__(self, positions_nm) -> tuple[np.ndarray, np.ndarray]:
        positions_nm = np.ascontiguousarray(positions_nm, dtype=np.float64)
        if positions_nm.ndim != 3 or positions_nm.shape[1:] != (self.n_atoms, 3):
            raise ValueError(f"expected positions of shape [N, {self.n_atoms}, 3], got {positions_nm.shape}")
        start = time.perf_counter()
        if self._pool is None:
            if self._context is None:
                raise RuntimeError("EnergyEvaluator is closed")
            result = _evaluate(self._context, positions_nm)
        else:
            result = self._evaluate_in_pool(positions_nm)
        self.seconds_evaluating += time.perf_counter() - start
        self.n_samples_evaluated += len(positions_nm)
        return result

    def _evaluate_in_pool(self, positions_nm):
        n_samples = len(positions_nm)
        if n_samples == 0:
            return np.empty(0), np.empty((0, self.n_atoms, 3))
        # A few chunks per worker balance the load without paying the pickling cost per sample.
        n_chunks = min(n_samples, 4 * self.n_workers)
        chunks = np.array_split(positions_nm, n_chunks)
        try:
            results = list(self._pool.map(_evaluate_in_worker, chunks))
        except BrokenProcessPool as error:
            raise MoleculeError(f"md.platform: energy workers on {self.platform!r} failed to start "
                                f"or died: {_first_line(error)}") from None
        return (np.concatenate([energy for energy, _ in results]),
                np.concatenate([forces for _, forces in results]))

    @property
    def samples_per_second(self) -> float:
        """Samples evaluated per second of wall time spent in calls so far (NaN before the first call)."""
        if self.seconds_evaluating <= 0:
            return math.nan
        return self.n_samples_evaluated / self.seconds_evaluating

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._context = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


# ----------------------------------------------------------------------------------------------------------
# torch bridge


def reduced_energy_function(evaluator: EnergyEvaluator, kt_kj_mol: float):
    """Return ``u(x)``: reduced energies E/kT [B] of positions x in nm, differentiable with torch autograd.

    ``x`` is a float64 tensor [B, n_atoms, 3] (or flattened [B, 3 n_atoms]). The gradient is -forces/kT,
    from the same OpenMM call as the energy. Rows OpenMM cannot evaluate give u = NaN and a zero gradient,
    so masking them out of a loss leaves the other rows' gradients intact.
    """
    function = _reduced_energy_autograd_function()
    kt_kj_mol = float(kt_kj_mol)

    def reduced_energy(x):
        return function.apply(x, evaluator, kt_kj_mol)

    return reduced_energy


@functools.cache
def _reduced_energy_autograd_function():
    import torch

    class ReducedEnergy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, evaluator, kt_kj_mol):
            positions_nm = x.detach().to("cpu", torch.float64).reshape(len(x), -1, 3).numpy()
            energy_kj_mol, forces_kj_mol_nm = evaluator(positions_nm)
            gradient = np.nan_to_num(-forces_kj_mol_nm / kt_kj_mol, nan=0.0)
            ctx.save_for_backward(torch.as_tensor(gradient, dtype=x.dtype, device=x.device).reshape(x.shape))
            return torch.as_tensor(energy_kj_mol / kt_kj_mol, dtype=x.dtype, device=x.device)

        @staticmethod
        def backward(ctx, grad_u):
            (gradient,) = ctx.saved_tensors
            grad_u = grad_u.reshape(-1, *([1] * (gradient.dim() - 1)))
            return grad_u * gradient, None, None

    return ReducedEnergy
