"""MD stages: Langevin walkers of a toy at one temperature; replica exchange of a molecule over the ladder;
or a molecule's MD that a user already has (trajectory files per temperature).

All end in the same per-temperature MD contract (``positions``, ``energy`` in kJ/mol, optionally
``independent``), so MBAR, training and the figures never ask which route made the samples.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import xarray as xr

from boltzflow.md import decorrelate, run_langevin, runs_statistical_inefficiency
from boltzflow.physics_errors import InputFileError, PhysicsError
from boltzflow.settings import LangevinSettings
from boltzflow.stages.datasets import variable


def md_stage(system, temperature_k: float, settings: LangevinSettings, log=print, checkpoint_path=None):
    """Langevin MD at one temperature of the ladder → decorrelated samples with their energies."""
    trajectory = run_langevin(system, temperature_k, settings, log=log, checkpoint_path=checkpoint_path)
    samples = decorrelate(system, trajectory)
    log(f"kept {len(samples.energy_kj_mol)} samples: discarded {samples.equilibration_frames} "
        f"transient frames, statistical inefficiency {samples.statistical_inefficiency:.1f} frames")
    # Only the steps this call integrated: after a resume, the wall time covers the rest of the run only.
    total_steps = settings.walkers * trajectory.steps_run
    ns_per_day = total_steps * settings.timestep_fs * 1e-6 / trajectory.wall_seconds * 86400
    return xr.Dataset(
        {
            "positions": variable(("sample", "cv"), samples.positions_nm, "nm", "walker position"),
            "energy": variable("sample", samples.energy_kj_mol, "kJ/mol", "potential energy E(x, y)"),
            "walker": variable("sample", samples.walker, "1", "walker index"),
            "time": variable("sample", samples.time_ps, "ps", "simulation time of the sample"),
        },
        coords={"cv": list(system.cvs)},
        attrs={
            "temperature_k": trajectory.temperature_k,
            "equilibration_frames": samples.equilibration_frames,
            "statistical_inefficiency_frames": samples.statistical_inefficiency,
            "md_wall_seconds": trajectory.wall_seconds,
            "md_ns_per_day_all_walkers": ns_per_day,
        },
    )


def replica_exchange_stage(system, settings, log=print, checkpoint_path=None, threads: int = 1,
                           run: int = 1) -> xr.Dataset:
    """Independent run ``run`` (1, 2, ...) of temperature replica exchange over the ladder → every
    recorded frame of every state.

    ``settings`` is the ``md`` block's ``ReplicaExchangeSettings``; its platform may be ``auto``, resolved
    here by timing the available ones. The run's seed is :func:`~boltzflow.replica_exchange.run_seed`.
    """
    from boltzflow.molecules import check_dihedral_chains, dihedral_label, platform_properties, select_platform
    from boltzflow.replica_exchange import run_replica_exchange, run_seed

    molecule = system.load_molecule()
    # The Snakefile checks the CVs only where it can import OpenMM (not under --use-conda).
    check_dihedral_chains(molecule, system.cv_atoms)
    for cv, atoms in system.cv_atoms.items():
        log(f"{cv} = {dihedral_label(molecule.topology, atoms)}")
    platform = select_platform(settings.platform, molecule, log=log, cpu_threads=threads)
    settings = dataclasses.replace(settings, platform=platform, seed=run_seed(settings.seed, run),
                                   platform_properties=platform_properties(platform, threads))
    log(f"replica exchange of {system.name} ({molecule.n_atoms} atoms) over "
        f"{', '.join(f'{t:g}' for t in system.temperatures_k)} K on {platform}: run {run}, seed {settings.seed}")
    try:
        # Checked as the frames come (a paper-sized run that inverts fails in minutes, not at its end).
        result = run_replica_exchange(
            molecule.system, molecule.topology, molecule.positions_nm, system.temperatures_k, settings, log=log,
            checkpoint_path=checkpoint_path,
            check_frames=lambda positions_nm, time_ps: check_stereochemistry(system, molecule, positions_nm,
                                                                               time_ps, run))
    except PhysicsError as error:
        message = str(error)  # the stereochemistry check names the system already
        raise PhysicsError(message if message.startswith(f"{system.name}: ") else f"{system.name}: {message}") from None
    ns = result.steps_integrated * settings.timestep_fs * 1e-6
    ns_per_day = ns / result.wall_seconds * 86400 if result.wall_seconds > 0 else np.nan
    log("exchange acceptance per neighbour pair: " + ", ".join(f"{a:.3f}" for a in result.acceptance))
    n_states = len(system.temperatures_k)
    return xr.Dataset(
        {
            "positions": variable(("temperature", "frame", "atom", "spatial"), result.positions_nm, "nm",
                                  "Cartesian positions of the replica in each state"),
            "energy": variable(("temperature", "frame"), result.energy_kj_mol, "kJ/mol", "potential energy"),
            "replica": variable(("temperature", "frame"), result.replica, "1", "replica in the state at the frame"),
            "time": variable("frame", result.time_ps, "ps", "MD time per replica since the start of production"),
            "acceptance": variable("pair", result.acceptance, "1",
                                   "fraction of accepted swaps between neighbouring temperatures (pair, pair + 1)"),
            "attempts": variable("pair", result.attempts, "1", "swap attempts per neighbouring pair"),
        },
        coords={"temperature": ("temperature", np.asarray(system.temperatures_k),
                                {"units": "K", "long_name": "temperature of the state"}),
                "pair": ("pair", np.arange(n_states - 1), {"units": "1", "long_name": "neighbour pair index"}),
                "spatial": ["x", "y", "z"]},
        attrs={"platform": platform, "run": run, "seed": settings.seed, "md_wall_seconds": result.wall_seconds,
               "md_ns_per_day_all_replicas": ns_per_day, "timestep_fs": settings.timestep_fs},
    )


def inefficiency_observables(system, energy: np.ndarray, cv_values: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The observables whose slowest correlation sets the statistical inefficiency of molecule MD: the
    energy, the cosine and sine of each CV, and the indicator of each state that switches at all (a
    constant has no correlation time). Arrays of one shape, frames along any axes.

    The state indicators are what ΔF averages: fast motion inside a basin can hide their slow switching in
    the cosine and sine of the CVs.
    """
    scale = np.pi / 180.0 if system.cv_units == "degrees" else 1.0
    series = [energy] + [f(cv_values[cv] * scale) for cv in system.cvs for f in (np.cos, np.sin)]
    indicators = [state.contains(cv_values).astype(float) for state in system.states]
    return series + [indicator for indicator in indicators if 0 < indicator.mean() < 1]


def _first_inversion(molecule, positions_nm: np.ndarray) -> tuple[tuple[int, ...], str] | None:
    """(index of the first frame, label of the atom) where a tetrahedral centre of ``positions_nm``
    ([..., atom, 3]) is inverted against the molecule's PDB (well on the mirror side:
    :func:`boltzflow.stereochemistry.first_inversion`); None if none is."""
    from boltzflow.molecules import atom_label
    from boltzflow.stereochemistry import first_inversion, tetrahedral_centres

    centres, neighbours = tetrahedral_centres(molecule.bonds, molecule.n_atoms)
    inversion = first_inversion(positions_nm, molecule.positions_nm, centres, neighbours)
    if inversion is None:
        return None
    frame, atom = inversion
    return frame, atom_label(molecule.topology, atom)


def check_stereochemistry(system, molecule, positions_nm: np.ndarray, time_ps: np.ndarray, run: int) -> None:
    """Raise a one-line :class:`PhysicsError` if a tetrahedral centre inverted in any state of the run
    (positions [state, frame, atom, 3]); see :mod:`boltzflow.stereochemistry` for why."""
    inversion = _first_inversion(molecule, positions_nm)
    if inversion is not None:
        (state, frame), atom = inversion
        raise PhysicsError(
            f"{system.name}: replica exchange run {run}: {atom} turned into its mirror "
            f"image at {system.temperatures_k[state]:g} K, {time_ps[frame]:g} ps; the hottest temperatures "
            f"({max(system.temperatures_k):g} K) cross its inversion barrier, and the target ensemble would mix "
            "both mirror images: lower the top of the ladder")


def check_imported_stereochemistry(molecule, positions_nm: np.ndarray, where: str) -> None:
    """Raise a one-line :class:`InputFileError` if a tetrahedral centre of imported frames ([frame, atom, 3]) is
    well on the mirror side of the system's PDB (:func:`boltzflow.stereochemistry.first_inversion`): the
    molecule's energy restrains every centre to the PDB's (:func:`boltzflow.molecules.chirality_restraint`), so
    such frames belong to another ensemble."""
    inversion = _first_inversion(molecule, positions_nm)
    if inversion is not None:
        (frame,), atom = inversion
        raise InputFileError(f"{where}: {atom} is the mirror image of the PDB's at frame "
                             f"{frame}; expected MD that keeps every tetrahedral centre's handedness (the PDB's)")


def replica_state_stage(system, runs: list[xr.Dataset], temperature_k: float, log=print) -> xr.Dataset:
    """One temperature of independent replica exchange runs of one ladder, pooled, in the per-temperature
    MD contract.

    Every recorded frame of every run is kept (the models train on all of them), run after run; replicas
    are numbered across runs (run r's replica i is ``r * n_states + i``), so each keeps its own time
    series. ``independent`` marks the subsample that MBAR uses, one frame per statistical inefficiency
    in each run: the largest over the energy, the cosine and sine of each CV and the indicator of each
    state, of the state's time series and of the replica trajectories, over all runs
    (:func:`boltzflow.replica_exchange.statistical_inefficiencies`), so that MBAR's errors are not optimistic.
    """
    from pymbar import timeseries

    from boltzflow.replica_exchange import statistical_inefficiencies

    ladder = runs[0]["temperature"].values
    k = int(np.argmin(np.abs(ladder - temperature_k)))
    if not np.isclose(ladder[k], temperature_k):
        raise ValueError(f"temperature {temperature_k:g} K is not a state of the replica exchange run")
    for run in runs[1:]:
        if run["temperature"].shape != ladder.shape or not np.allclose(run["temperature"].values, ladder) \
                or run["positions"].shape != runs[0]["positions"].shape:
            raise ValueError("independent replica exchange runs of one system must share the ladder and length")
    # [run, state, frame, ...] arrays; the CVs of every state's frames, for the replica trajectories.
    all_positions = np.stack([run["positions"].values for run in runs])
    energies = np.stack([run["energy"].values for run in runs])
    replica = np.stack([run["replica"].values for run in runs])
    shape = all_positions.shape[:3]
    all_cvs = {cv: values.reshape(shape) for cv, values in
               system.cv_values(all_positions.reshape(-1, *all_positions.shape[3:])).items()}
    g_state, g_replica = statistical_inefficiencies(inefficiency_observables(system, energies, all_cvs), replica, k)
    inefficiency = max(g_state, g_replica)
    n_frames = shape[2]
    kept = timeseries.subsample_correlated_data(np.arange(n_frames), g=inefficiency)
    independent = np.zeros((len(runs), n_frames), dtype=np.int8)
    independent[:, kept] = 1
    positions = all_positions[:, k].reshape(-1, *all_positions.shape[3:])
    cvs = {cv: all_cvs[cv][:, k].ravel() for cv in system.cvs}
    replica_ids = (replica[:, k] + len(ladder) * np.arange(len(runs))[:, None]).ravel()
    log(f"{temperature_k:g} K: {len(runs)} run(s) x {n_frames} frames, statistical inefficiency "
        f"{inefficiency:.1f} frames (state series {g_state:.1f}, replica trajectories {g_replica:.1f}), "
        f"{int(independent.sum())} independent samples for MBAR")
    return xr.Dataset(
        {
            "positions": variable(("sample", "atom", "spatial"), positions, "nm", "Cartesian positions"),
            "energy": variable("sample", energies[:, k].ravel(), "kJ/mol", "potential energy"),
            "cv_values": variable(("sample", "cv"), np.stack([cvs[cv] for cv in system.cvs], axis=1),
                                  system.cv_units, "dihedral CVs"),
            "independent": variable("sample", independent.ravel(), "1", "1 for the decorrelated subsample used by MBAR"),
            "replica": variable("sample", replica_ids, "1", "replica in this state at the frame (numbered across runs)"),
            "run": variable("sample", np.repeat(np.arange(1, len(runs) + 1), n_frames), "1",
                            "independent replica exchange run of the frame"),
            "time": variable("sample", np.tile(runs[0]["time"].values, len(runs)), "ps",
                             "MD time per replica since the start of its run's production"),
        },
        coords={"cv": list(system.cvs), "spatial": ["x", "y", "z"]},
        attrs={"temperature_k": float(temperature_k), "statistical_inefficiency_frames": inefficiency,
               "statistical_inefficiency_state_frames": g_state,
               "statistical_inefficiency_replica_frames": g_replica, "runs": len(runs)},
    )


#: Frames whose bonds to hydrogen spread less than this (nm, the median over those bonds of each one's standard
#: deviation) come from MD with constrained bonds. Flexible X-H bonds spread about 0.003 nm at 300 K
#: (sqrt(kT / k), k ~ 3e5 kJ/mol/nm^2), colder ones a little less; constrained ones only by the file's
#: rounding (XTC's 0.001 nm grid: about 0.0004 nm).
CONSTRAINED_BOND_SPREAD_NM = 1e-3
#: Fewer frames than this say nothing about a spread.
MIN_FRAMES_FOR_BOND_SPREAD = 10


def check_flexible_hydrogen_bonds(molecule, positions_nm: np.ndarray, what: str) -> None:
    """Raise a one-line :class:`~boltzflow.physics_errors.InputFileError` if the frames ([frame, atom, 3])
    come from MD with constrained bonds to hydrogen: they sample another ensemble than the flexible one
    that MBAR, the models and the reweighting use (the ``constraints: none`` rule, for imported MD)."""
    hydrogen_bonds = [(a, b) for a, b in molecule.bonds if not (molecule.heavy[a] and molecule.heavy[b])]
    if not hydrogen_bonds or len(positions_nm) < MIN_FRAMES_FOR_BOND_SPREAD:
        return
    a, b = np.array(hydrogen_bonds).T
    lengths = np.linalg.norm(positions_nm[:, a] - positions_nm[:, b], axis=-1)
    spread = float(np.median(lengths.std(axis=0)))
    if spread < CONSTRAINED_BOND_SPREAD_NM:
        raise InputFileError(f"{what}: its bonds to hydrogen hardly vibrate (median spread {spread:.1e} nm, "
                             f"flexible ones about 3e-3 nm): MD with constraints samples another ensemble than "
                             "the flexible one every estimate here uses; expected MD without constraints")


def trajectory_state_stage(system, temperature_k: float, files: list[str], log=print, workers: int = 1) -> xr.Dataset:
    """MD a user already has at one temperature of the ladder (trajectory files), in the per-temperature MD
    contract of :func:`replica_state_stage`.

    Every file is read in the atom order of the system's PDB and checked against it before any energy is
    computed (:func:`boltzflow.trajectory_files.read_trajectory`); a file is an independent run, its frames in
    the order written. Energies are recomputed with the system's own OpenMM System on the Reference platform
    (what the models' energies use), in ``workers`` processes, so that MBAR and the reweighting see one
    potential whatever made the frames. Every frame is kept; ``independent`` marks one frame per statistical
    inefficiency g in each file, g being the largest over the energy, the cosine and sine of each CV and the
    indicator of each state (those that switch at all) of the inefficiency over the files as independent runs
    (:func:`boltzflow.md.runs_statistical_inefficiency`). ``trajectory`` (the index of the file
    in the ``file`` coordinate) and ``frame`` (its place in the file) let the training's validation split
    hold out the end of every file (:func:`boltzflow.stages.flow.validation_split`).
    """
    from pymbar import timeseries

    from boltzflow.molecules import EnergyEvaluator
    from boltzflow.trajectory_files import read_trajectory

    key = f"systems.{system.name}.md.files.{temperature_k:g}"
    runs = [read_trajectory(path, system.pdb_path, key) for path in files]
    molecule = system.load_molecule()
    for run in runs:
        check_flexible_hydrogen_bonds(molecule, run.positions_nm, f"{key}: '{run.path}'")
        check_imported_stereochemistry(molecule, run.positions_nm, f"{key}: '{run.path}'")
    energies = []
    with EnergyEvaluator(molecule, platform="Reference", n_workers=workers) as evaluator:
        for run in runs:
            energy, _ = evaluator(run.positions_nm)
            bad = np.flatnonzero(~np.isfinite(energy))
            if len(bad):
                raise PhysicsError(f"MD of {system.name} at {temperature_k:g} K: {len(bad)} frames of '{run.path}' "
                                   f"have a non-finite energy with {', '.join(system.forcefield)} (first: frame "
                                   f"{bad[0]}); expected frames of this molecule at finite energy")
            energies.append(energy)
            log(f"{run.path}: {len(energy)} frames, mean energy {energy.mean():.2f} kJ/mol")
        log(f"energies recomputed with {', '.join(system.forcefield)} on the Reference platform: "
            f"{evaluator.samples_per_second:.0f} frames/s")
    cvs = [system.cv_values(run.positions_nm) for run in runs]
    # The observables of all files at once, then split back into one series per file.
    ends = np.cumsum([len(energy) for energy in energies])[:-1]
    pooled = inefficiency_observables(system, np.concatenate(energies),
                                      {cv: np.concatenate([values[cv] for values in cvs]) for cv in system.cvs})
    inefficiency = max(runs_statistical_inefficiency(np.split(observable, ends)) for observable in pooled)
    independent = []
    for energy in energies:
        flags = np.zeros(len(energy), dtype=np.int8)
        flags[timeseries.subsample_correlated_data(np.arange(len(energy)), g=inefficiency)] = 1
        independent.append(flags)
    n_independent = int(sum(flags.sum() for flags in independent))
    log(f"{temperature_k:g} K: {sum(len(e) for e in energies)} frames in {len(runs)} files, statistical inefficiency "
        f"{inefficiency:.1f} frames (files as independent runs), {n_independent} independent samples for MBAR")
    positions = np.concatenate([run.positions_nm for run in runs])
    cv_values = np.concatenate([np.stack([values[cv] for cv in system.cvs], axis=1) for values in cvs])
    return xr.Dataset(
        {
            "positions": variable(("sample", "atom", "spatial"), positions, "nm", "Cartesian positions"),
            "energy": variable("sample", np.concatenate(energies), "kJ/mol",
                               "potential energy, recomputed with the system's force field"),
            "cv_values": variable(("sample", "cv"), cv_values, system.cv_units, "dihedral CVs"),
            "independent": variable("sample", np.concatenate(independent), "1",
                                    "1 for the decorrelated subsample used by MBAR"),
            "trajectory": variable("sample", np.concatenate([np.full(len(run.time_ps), i) for i, run in enumerate(runs)]),
                                   "1", "index of the input file (coordinate file) the frame comes from"),
            "frame": variable("sample", np.concatenate([np.arange(len(run.time_ps)) for run in runs]), "1",
                              "frame index within its input file"),
            "time": variable("sample", np.concatenate([run.time_ps for run in runs]), "ps",
                             "time as the input file stores it (mdtraj; a DCD stores none: its frames count from 0)"),
        },
        coords={"cv": list(system.cvs), "spatial": ["x", "y", "z"], "file": [run.path for run in runs]},
        attrs={"temperature_k": float(temperature_k), "statistical_inefficiency_frames": inefficiency,
               "energy_platform": "Reference"},
    )
