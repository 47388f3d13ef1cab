"""Langevin molecular dynamics with OpenMM: many independent walkers of a toy system at one temperature.

All walkers are non-interacting particles of one OpenMM System, so one ``integrator.step`` call advances
all of them; positions are read back only every ``report_interval`` steps, which keeps the overhead over
raw integration small (see benchmarks/md_throughput.py).

Equilibration is discarded twice: a fixed number of steps before anything is recorded, then the transient
that ``pymbar.timeseries.detect_equilibration`` finds in the walker-averaged observables. Frames are then
subsampled by the largest statistical inefficiency of the energy, x and y (estimated over all walkers with
``statistical_inefficiency_multiple``), so that the samples kept are effectively independent.

Every ``report_interval`` steps (equilibration included, and before the first step) the run checks its
physics and stops with a one-line :class:`~boltzflow.physics_errors.PhysicsError` when the energy is not
finite (an expression undefined where a walker went, such as log(x) at x <= 0) or a walker has escaped
beyond :func:`escape_limits` (an energy unbounded below, such as -x^2-y^2, accelerates walkers outward).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from boltzflow.checkpoints import Checkpoint
from boltzflow.physics_errors import PhysicsError
from boltzflow.settings import LangevinSettings
from boltzflow.systems import Toy2DSystem


@dataclass
class Trajectory:
    """Positions of every walker at each reported frame (after the fixed equilibration)."""

    positions_nm: np.ndarray  # [frame, walker, 2] x-y positions
    time_ps: np.ndarray  # [frame]
    temperature_k: float
    wall_seconds: float
    steps_run: int  # steps per walker integrated in this call (fewer than the total after a resume)


def integrator_seed(seed: int, temperature_k: float) -> int:
    """A positive 31-bit seed per temperature, derived from the run seed (0 would mean 'random' in OpenMM).

    It depends on the temperature's value, not its place in the ladder, so adding a temperature to the
    ladder leaves the runs at the others unchanged.
    """
    entropy = [seed, int(round(temperature_k * 1000))]
    value = int(np.random.SeedSequence(entropy).generate_state(1)[0]) & 0x7FFFFFFF
    return value or 1


def initial_positions(system: Toy2DSystem, walkers: int, rng: np.random.Generator) -> np.ndarray:
    """Walkers start uniformly in the bounds box (or the box spanned by the finite state limits)."""
    box = system.bounds or _state_hull(system)
    low = np.array([box[cv][0] for cv in system.cvs])
    high = np.array([box[cv][1] for cv in system.cvs])
    xy = rng.uniform(low, high, size=(walkers, 2))
    return np.column_stack([xy, np.zeros(walkers)])


#: How far outside the walkers' starting box a walker may go, in widths of the box on each side, before
#: the run stops. Ten widths out, a bounded energy that the box frames sensibly has a Boltzmann weight of
#: nothing; a walker there has run down an energy that is unbounded below.
ESCAPE_WIDTHS = 10.0


def escape_limits(system: Toy2DSystem) -> dict[str, tuple[float, float]]:
    """Per CV, the interval (nm) a walker must stay in: the starting box widened by ``ESCAPE_WIDTHS`` widths."""
    box = system.bounds or _state_hull(system)
    return {cv: (box[cv][0] - ESCAPE_WIDTHS * (box[cv][1] - box[cv][0]),
                 box[cv][1] + ESCAPE_WIDTHS * (box[cv][1] - box[cv][0])) for cv in system.cvs}


def check_walkers(system: Toy2DSystem, temperature_k: float, xy_nm: np.ndarray, energy_kj_mol: float,
                  step: int, limits: dict[str, tuple[float, float]]) -> None:
    """Raise :class:`PhysicsError` if the energy (of all walkers) or a position is not finite, or a walker
    is outside ``limits`` (from :func:`escape_limits`); ``xy_nm`` is [walker, 2], ``step`` counts from the start."""
    where = f"MD of {system.name} at {temperature_k:g} K"
    if not (np.isfinite(energy_kj_mol) and np.isfinite(xy_nm).all()):
        raise PhysicsError(f"{where}: non-finite energy at step {step} (the energy expression is undefined or "
                           f"infinite where a walker went, e.g. log(x) at x <= 0); check systems.{system.name}.energy")
    for i, cv in enumerate(system.cvs):
        lo, hi = limits[cv]
        excess = np.maximum(lo - xy_nm[:, i], xy_nm[:, i] - hi)
        walker = int(np.argmax(excess))
        if excess[walker] > 0:
            raise PhysicsError(
                f"{where}: walker {walker} escaped to {cv} = {xy_nm[walker, i]:.4g} nm at step {step}, beyond "
                f"[{lo:g}, {hi:g}] nm (the starting box widened by {ESCAPE_WIDTHS:g} widths on each side); "
                f"the energy is probably unbounded below; check systems.{system.name}.energy")


def _state_hull(system: Toy2DSystem) -> dict[str, tuple[float, float]]:
    hull = {}
    for cv in system.cvs:
        limits = [v for state in system.states for box in state.boxes for v in box[cv] if np.isfinite(v)]
        hull[cv] = (min(limits), max(limits)) if len(limits) >= 2 and min(limits) < max(limits) else (-1.0, 1.0)
    return hull


def make_simulation(system: Toy2DSystem, temperature_k: float, settings: LangevinSettings,
                    seed: int):
    """An OpenMM Context with the walkers placed and velocities drawn; returns (context, integrator)."""
    from openmm import unit

    from boltzflow.molecules import langevin_integrator, make_context

    omm_system = system.openmm_system(settings.walkers, settings.mass_amu, settings.z_spring_kj_mol_nm2)
    integrator = langevin_integrator(temperature_k, settings.friction_per_ps, settings.timestep_fs, seed)
    context = make_context(omm_system, settings.platform, integrator=integrator)
    rng = np.random.default_rng(seed)
    context.setPositions(initial_positions(system, settings.walkers, rng) * unit.nanometer)
    context.setVelocitiesToTemperature(temperature_k * unit.kelvin, seed)
    return context, integrator


class MDCheckpoint:
    """Resumable progress of one MD run in the folder ``path``: recorded frames and the OpenMM Context state.

    ``frames.bin`` holds the x-y frames as raw float64 records, appended as they are recorded, so the
    total I/O is one copy of the trajectory. ``state.npz`` is a :class:`boltzflow.checkpoints.Checkpoint`
    (written atomically, ignored when written with other ``settings``: never mixed in) with the number of
    frames the checkpoint covers and the OpenMM checkpoint (positions, velocities and the integrator's
    random-number state, so a resumed run continues bit for bit on the same platform).
    """

    def __init__(self, path: str | Path, settings, frame_shape: tuple[int, ...]):
        self.path = Path(path)
        self.frame_shape = frame_shape
        self._state = Checkpoint(self.path / "state.npz", settings)

    @property
    def _frames(self) -> Path:
        return self.path / "frames.bin"

    def load(self) -> tuple[int, np.ndarray, bytes] | None:
        """(frames done, their positions, OpenMM checkpoint) or None if there is no usable checkpoint."""
        saved = self._state.load()
        if saved is None or not self._frames.exists():
            return None
        done = int(saved["frames"])
        # The frames file may hold more records than the state covers (killed between the two writes).
        record = int(np.prod(self.frame_shape))
        frames = np.fromfile(self._frames, dtype=np.float64, count=done * record)
        if frames.size != done * record:
            return None
        return done, frames.reshape(done, *self.frame_shape), saved["openmm"].tobytes()

    def save(self, positions: np.ndarray, done: int, saved_before: int, openmm_state: bytes) -> None:
        """Append frames [saved_before, done), then record the state for ``done`` frames atomically."""
        self.path.mkdir(parents=True, exist_ok=True)
        mode = "r+b" if saved_before and self._frames.exists() else "wb"
        with open(self._frames, mode) as handle:
            handle.seek(saved_before * positions[0].nbytes)
            handle.write(np.ascontiguousarray(positions[saved_before:done]).tobytes())
            handle.truncate()
            handle.flush()
            os.fsync(handle.fileno())
        self._state.save({"frames": np.array(done), "openmm": np.frombuffer(openmm_state, dtype=np.uint8)})

    def remove(self) -> None:
        # The state first: a folder left half-removed then holds no checkpoint that could be resumed.
        self._state.remove()
        shutil.rmtree(self.path, ignore_errors=True)


def run_langevin(system: Toy2DSystem, temperature_k: float, settings: LangevinSettings,
                 log=print, checkpoint_path: str | Path | None = None) -> Trajectory:
    """Run equilibration then production; record x-y of all walkers every ``report_interval`` steps.

    With ``checkpoint_path``, progress is saved every tenth of the production (and after equilibration)
    and a run with the same settings resumes from it; the folder is removed when the run completes.
    """
    seed = integrator_seed(settings.seed, temperature_k)
    context, integrator = make_simulation(system, temperature_k, settings, seed)
    log(f"MD {system.name} at {temperature_k:g} K: {settings.walkers} walkers, "
        f"{settings.equilibration_steps} + {settings.steps} steps of {settings.timestep_fs:g} fs, "
        f"platform {context.getPlatform().getName()}, seed {seed}")

    n_frames = settings.steps // settings.report_interval
    positions = np.empty((n_frames, settings.walkers, 2))
    checkpoint = resumed = None
    first = 0
    if checkpoint_path is not None:
        run = [system.energy_expression, temperature_k, asdict(settings), context.getPlatform().getName()]
        checkpoint = MDCheckpoint(checkpoint_path, run, positions.shape[1:])
        resumed = checkpoint.load()
        if resumed is not None:
            first, positions[:first], openmm_state = resumed
            context.loadCheckpoint(openmm_state)
            log(f"  resuming from checkpoint: {first}/{n_frames} frames already recorded")

    limits = escape_limits(system)

    def step_and_check(steps: int, step_after: int) -> np.ndarray:
        """Integrate ``steps`` steps, check the physics, return the x-y of every walker."""
        import openmm

        try:
            integrator.step(steps)
            state = context.getState(getPositions=True, getEnergy=True)
        except openmm.OpenMMException as error:  # e.g. a NaN coordinate, on some platforms
            raise PhysicsError(f"MD of {system.name} at {temperature_k:g} K: OpenMM stopped by step {step_after}: "
                               f"{str(error).splitlines()[0]}") from None
        xy = state.getPositions(asNumpy=True)._value[:, :2]
        check_walkers(system, temperature_k, xy, state.getPotentialEnergy()._value, step_after, limits)
        return xy

    start = time.perf_counter()
    if resumed is None:
        step_and_check(0, 0)
        # In report intervals, so that a run gone wrong stops within one interval, not after equilibration.
        for done in range(0, settings.equilibration_steps, settings.report_interval):
            chunk = min(settings.report_interval, settings.equilibration_steps - done)
            step_and_check(chunk, done + chunk)
        if checkpoint is not None:
            checkpoint.save(positions, 0, 0, context.createCheckpoint())
    progress_every = max(1, n_frames // 10)
    saved = first
    total = settings.equilibration_steps + n_frames * settings.report_interval
    steps_before = 0 if resumed is None else settings.equilibration_steps + first * settings.report_interval
    for frame in range(first, n_frames):
        positions[frame] = step_and_check(settings.report_interval,
                                          settings.equilibration_steps + (frame + 1) * settings.report_interval)
        if (frame + 1) % progress_every == 0 or frame + 1 == n_frames:
            elapsed = time.perf_counter() - start
            done = settings.equilibration_steps + (frame + 1) * settings.report_interval
            rate = (done - steps_before) / elapsed
            log(f"  step {done}/{total}  {rate:,.0f} steps/s  ETA {(total - done) / rate:.1f} s")
            if checkpoint is not None and frame + 1 < n_frames:
                checkpoint.save(positions, frame + 1, saved, context.createCheckpoint())
                saved = frame + 1
    wall = time.perf_counter() - start
    if checkpoint is not None:
        checkpoint.remove()
    dt_ps = settings.timestep_fs * 1e-3
    time_ps = (settings.equilibration_steps + settings.report_interval * np.arange(1, n_frames + 1)) * dt_ps
    steps_run = settings.equilibration_steps + n_frames * settings.report_interval - steps_before
    return Trajectory(positions, time_ps, temperature_k, wall, steps_run)


#: Walkers (evenly spaced by index) from which the statistical inefficiency is estimated.
WALKERS_FOR_INEFFICIENCY = 64


@dataclass
class Decorrelated:
    """Effectively independent samples pooled over walkers, with how they were chosen."""

    positions_nm: np.ndarray  # [sample, 2]
    energy_kj_mol: np.ndarray  # [sample]
    walker: np.ndarray  # [sample]
    time_ps: np.ndarray  # [sample]
    equilibration_frames: int
    statistical_inefficiency: float


def runs_statistical_inefficiency(runs: list[np.ndarray]) -> float:
    """Statistical inefficiency in frames (≥ 1) of one observable over independent runs of one ensemble.

    Each run is a time series ([frame]): walkers of a toy, replica exchange runs, trajectory files. At
    equilibrium they share one autocorrelation function, which ``pymbar.timeseries.statistical_inefficiency_multiple``
    estimates from all of them at once, about the pooled mean: a run stuck in one basin (a constant
    indicator) then counts as the long correlation it is. A single run takes pymbar's one-series estimator.
    An observable constant over every run has no correlation time and constrains nothing (1).
    """
    from pymbar import timeseries

    runs = [np.asarray(run, dtype=float) for run in runs]
    if np.ptp(np.concatenate(runs)) == 0:
        return 1.0
    if len(runs) == 1:
        return max(1.0, float(timeseries.statistical_inefficiency(runs[0], fast=False, mintime=3)))
    return max(1.0, float(timeseries.statistical_inefficiency_multiple(runs, fast=False)))


def decorrelate(system: Toy2DSystem, trajectory: Trajectory) -> Decorrelated:
    """Discard the detected transient and subsample by the statistical inefficiency (pymbar.timeseries)."""
    from pymbar import timeseries

    frames, walkers, _ = trajectory.positions_nm.shape
    energy = system.energy_kj_mol(trajectory.positions_nm.reshape(-1, 2)).reshape(frames, walkers)
    # The transient is a drift of the whole ensemble (walkers start uniformly in the box and relax
    # into the basins), so it is detected on walker averages; x and y are included because state
    # populations (barrier crossings) can relax more slowly than the energy.
    observables = [energy, *np.moveaxis(trajectory.positions_nm, 2, 0)]  # each [frame, walker]
    nskip = max(1, frames // 200)  # detect_equilibration is quadratic in the series length
    t0 = max(timeseries.detect_equilibration(obs.mean(axis=1), nskip=nskip)[0] for obs in observables)
    # A transient longer than half the run means the run is too short; keep the second half regardless
    # (the log reports the discarded frames, so a user can see it and lengthen the run).
    t0 = min(t0, frames // 2)
    # Independent walkers share one autocorrelation function: pymbar estimates it from many of them
    # at once, which is far less noisy than from any single walker or from the walker average.
    # Its cost grows with the number of walkers, and 64 already pin it down well.
    subset = np.linspace(0, walkers - 1, min(walkers, WALKERS_FOR_INEFFICIENCY)).astype(int)
    inefficiency = max(runs_statistical_inefficiency(list(obs[t0:, subset].T)) for obs in observables)
    stride = max(1, int(np.ceil(inefficiency)))
    kept = np.arange(t0, frames, stride)
    return Decorrelated(
        positions_nm=trajectory.positions_nm[kept].reshape(-1, 2),
        energy_kj_mol=energy[kept].reshape(-1),
        walker=np.tile(np.arange(walkers), len(kept)),
        time_ps=np.repeat(trajectory.time_ps[kept], walkers),
        equilibration_frames=int(t0),
        statistical_inefficiency=float(inefficiency),
    )
