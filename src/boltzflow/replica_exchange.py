"""Temperature replica exchange with OpenMM, and AMBER NetCDF output of the frames it records.

Conventions:
- a *state* is a temperature of the ladder, index ``k`` in increasing temperature; each state has one
  OpenMM Context (with its own Langevin integrator) for the whole run;
- a *replica* is a configuration (positions and velocities) wandering between states; replica ``r``
  starts in state ``r``. Swapping two replicas copies their configurations between the two Contexts;
- arrays are indexed by state first: ``energy_kj_mol[k, frame]`` is the potential energy of whichever
  replica was in state ``k`` at that frame, and ``replica[k, frame]`` says which one it was;
- pair ``k`` is the neighbour pair of states (k, k + 1);
- lengths in nm, energies in kJ/mol, temperatures in K, times in ps (MD time per replica).

Swaps are attempted every ``steps_per_exchange`` steps, alternating the even pairs (0-1, 2-3, ...) on
exchanges with an even index and the odd pairs (1-2, 3-4, ...) on the others, and accepted with the
Metropolis criterion of :func:`swap_acceptance_probability`. The potential is the same in every state,
so the energy read from a Context is the energy of its configuration in any state.

Python touches the Contexts only every ``report_interval`` steps (or at exchanges during equilibration),
so integration runs at nearly the speed of raw ``integrator.step``. Each time, it checks that the potential
energy is finite, and stops with a one-line :class:`~boltzflow.physics_errors.PhysicsError` naming the
temperature and the step if it is not (or if OpenMM itself gives up on a NaN coordinate).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from boltzflow.checkpoints import Checkpoint
from boltzflow.io import atomic_path
from boltzflow.physics_errors import PhysicsError
from boltzflow.settings import ReplicaExchangeSettings
from boltzflow.units import MOLAR_GAS_CONSTANT_KJ_MOL_K

#: Local energy minimisation before the run: tolerance in kJ/mol/nm and an iteration cap, so a strained
#: starting structure cannot make the first steps blow up, and minimisation cannot run for ever.
MINIMIZATION_TOLERANCE_KJ_MOL_NM = 10.0
MINIMIZATION_MAX_ITERATIONS = 1000

#: How many progress lines and checkpoints a run writes (about; fewer for short runs).
PROGRESS_LINES = 20
CHECKPOINTS = 10


@dataclass
class ReplicaExchangeResult:
    """Frames recorded every ``report_interval`` steps of production, indexed by state (see module doc).

    ``time_ps[f]`` is the MD time per replica since the start of production, so the first frame is at
    one report interval. ``acceptance[k]`` is the fraction of production swap attempts of pair (k, k + 1)
    that were accepted (NaN if never attempted). ``steps_integrated`` counts MD steps over all replicas
    run in this call (a resumed run does not count the steps its checkpoint already covered), and
    ``wall_seconds`` is the time they took (setup and minimisation excluded), so together they give the
    throughput.
    """

    positions_nm: np.ndarray  # [state, frame, atom, 3] float32
    energy_kj_mol: np.ndarray  # [state, frame] float64
    replica: np.ndarray  # [state, frame] int
    time_ps: np.ndarray  # [frame]
    temperatures_k: np.ndarray  # [state]
    acceptance: np.ndarray  # [state - 1]
    attempts: np.ndarray  # [state - 1] int
    wall_seconds: float
    steps_integrated: int


class ReplicaExchangeInterrupted(RuntimeError):
    """Raised by the ``_stop_after_exchanges`` hook of :func:`run_replica_exchange` (tests of resuming)."""


def swap_acceptance_probability(energy_i_kj_mol: float, energy_j_kj_mol: float,
                                temperature_i_k: float, temperature_j_k: float) -> float:
    """Metropolis probability to swap the configurations of states i and j of a temperature ladder.

    ``energy_i_kj_mol`` is the potential energy of the configuration currently in state i (temperature
    ``temperature_i_k``). The swap leaves the product of the Boltzmann distributions invariant when
    accepted with min(1, exp((β_i − β_j)(E_i − E_j))), β = 1 / (R T).
    """
    beta_i = 1.0 / (MOLAR_GAS_CONSTANT_KJ_MOL_K * temperature_i_k)
    beta_j = 1.0 / (MOLAR_GAS_CONSTANT_KJ_MOL_K * temperature_j_k)
    log_ratio = (beta_i - beta_j) * (energy_i_kj_mol - energy_j_kj_mol)
    # exp of a large positive number would overflow; the probability is 1 there anyway.
    return 1.0 if log_ratio >= 0 else float(np.exp(log_ratio))


def openmm_seed(seed: int, temperature_k: float, purpose: str) -> int:
    """A positive 31-bit seed for one state and one use ("integrator", "velocities"), from the run seed.

    It depends on the temperature's value, not its place in the ladder, so adding a temperature leaves
    the seeds of the others unchanged; the purpose keeps the integrator noise and the initial velocities
    from being drawn from the same random stream.
    """
    tag = int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:4], "little")
    value = int(np.random.SeedSequence([seed, int(round(temperature_k * 1000)), tag]).generate_state(1)[0])
    return (value & 0x7FFFFFFF) or 1


def run_seed(seed: int, run: int) -> int:
    """The seed of independent run ``run`` (1, 2, ...) of a ladder: run 1 keeps ``seed``, so one run is
    what it always was; the others draw positive 31-bit seeds from it."""
    if run == 1:
        return int(seed)
    value = int(np.random.SeedSequence([int(seed), int(run)]).generate_state(1)[0])
    return (value & 0x7FFFFFFF) or 1


def run_replica_exchange(system, topology, positions_nm, temperatures_k, settings: ReplicaExchangeSettings,
                         log: Callable[[str], None] = print, checkpoint_path: str | Path | None = None,
                         check_frames: Callable[[np.ndarray, np.ndarray], None] | None = None,
                         _stop_after_exchanges: int | None = None) -> ReplicaExchangeResult:
    """Run temperature replica exchange of ``system`` (an ``openmm.System``) over ``temperatures_k``.

    All replicas start from ``positions_nm`` ([atom, 3], minimised once) with velocities drawn at their
    state's temperature. ``topology`` (an ``openmm.app.Topology``) is only checked against the atom
    count. On the Reference platform a run is reproducible for a seed.

    With ``checkpoint_path`` (a file), progress is saved about every tenth of the run and a rerun with
    the same settings, temperatures and atom count resumes from it, bit for bit on the Reference
    platform; a checkpoint of anything else is ignored (and overwritten). It is removed on success.
    ``check_frames(positions_nm, time_ps)`` is called at every progress line with the frames recorded since
    its last call ([state, frame, atom, 3] nm, and their times in ps), and at the end with the rest, so that
    a check that raises (a centre turned into its mirror image) stops the run then, not hours later at its
    end; a resumed run checks its checkpoint's frames again at its first call.
    ``_stop_after_exchanges`` (for tests) raises :class:`ReplicaExchangeInterrupted` once that many
    exchanges are done, counted from the start of the run (equilibration and resumed ones included).
    """
    from openmm import unit

    from boltzflow.molecules import langevin_integrator, make_context

    temperatures_k = np.asarray(temperatures_k, dtype=float)
    positions_nm = np.asarray(_strip_unit(positions_nm, unit.nanometer), dtype=float)
    n_atoms = system.getNumParticles()
    if temperatures_k.ndim != 1 or len(temperatures_k) < 1 or np.any(temperatures_k <= 0) \
            or np.any(np.diff(temperatures_k) <= 0):
        raise ValueError(f"temperatures_k must be positive and increasing, got {temperatures_k}")
    if positions_nm.shape != (n_atoms, 3):
        raise ValueError(f"positions_nm must have shape ({n_atoms}, 3), got {positions_nm.shape}")
    if topology.getNumAtoms() != n_atoms:
        raise ValueError(f"topology has {topology.getNumAtoms()} atoms, the system {n_atoms}")

    n_states = len(temperatures_k)
    n_pairs = n_states - 1
    contexts = []
    for temperature_k in temperatures_k:
        integrator = langevin_integrator(temperature_k, settings.friction_per_ps, settings.timestep_fs,
                                         openmm_seed(settings.seed, temperature_k, "integrator"))
        contexts.append(make_context(system, settings.platform, settings.platform_properties, integrator))
    platform_name = contexts[0].getPlatform().getName()

    frames_per_exchange = settings.steps_per_exchange // settings.report_interval
    n_frames = settings.exchanges * frames_per_exchange
    total_exchanges = settings.equilibration_exchanges + settings.exchanges
    record = _Record(
        positions_nm=np.zeros((n_states, n_frames, n_atoms, 3), dtype=np.float32),
        energy_kj_mol=np.zeros((n_states, n_frames)),
        replica=np.zeros((n_states, n_frames), dtype=np.int64),
        state_replica=np.arange(n_states),
        accepted=np.zeros(n_pairs, dtype=np.int64),
        attempts=np.zeros(n_pairs, dtype=np.int64),
    )
    rng = np.random.default_rng(settings.seed)
    checkpoint = None
    if checkpoint_path is not None:
        run = [asdict(settings), [float(t) for t in temperatures_k], n_atoms, platform_name]
        checkpoint = _Checkpoint(Path(checkpoint_path), run)
    done = checkpoint.load(record, contexts, rng) if checkpoint is not None else None
    log(f"replica exchange: {n_states} states {', '.join(f'{t:g}' for t in temperatures_k)} K, "
        f"{n_atoms} atoms, {settings.equilibration_exchanges} + {settings.exchanges} exchanges of "
        f"{settings.steps_per_exchange} steps of {settings.timestep_fs:g} fs, platform {platform_name}, "
        f"seed {settings.seed}")
    if done is None:
        done = 0
        _start(contexts, positions_nm, temperatures_k, settings.seed)
    else:
        log(f"  resuming from checkpoint {checkpoint_path}: {done}/{total_exchanges} exchanges done")

    progress_every = max(1, total_exchanges // PROGRESS_LINES)
    checkpoint_every = max(1, total_exchanges // CHECKPOINTS)
    first = done
    dt_ps = settings.timestep_fs * 1e-3
    time_ps = settings.report_interval * dt_ps * np.arange(1, n_frames + 1)
    frames_checked = 0
    start = time.perf_counter()
    for exchange in range(first, total_exchanges):
        frame0 = (exchange - settings.equilibration_exchanges) * frames_per_exchange
        energies = _advance(contexts, settings, record, frame0 if frame0 >= 0 else None, frames_per_exchange,
                            temperatures_k, exchange * settings.steps_per_exchange)
        _attempt_swaps(contexts, temperatures_k, energies, exchange, rng, record,
                       count=exchange >= settings.equilibration_exchanges)
        done = exchange + 1
        if done % progress_every == 0 or done == total_exchanges:
            _log_progress(log, settings, record, done, first, total_exchanges, n_states,
                          time.perf_counter() - start)
            frames_recorded = max(frame0 + frames_per_exchange, 0)
            if check_frames is not None and frames_recorded > frames_checked:
                check_frames(record.positions_nm[:, frames_checked:frames_recorded],
                             time_ps[frames_checked:frames_recorded])
                frames_checked = frames_recorded
        if checkpoint is not None and done % checkpoint_every == 0 and done < total_exchanges:
            checkpoint.save(record, contexts, rng, done, max(frame0 + frames_per_exchange, 0))
        if _stop_after_exchanges is not None and done >= _stop_after_exchanges:
            raise ReplicaExchangeInterrupted(f"stopped after {done} exchanges")
    wall_seconds = time.perf_counter() - start
    if checkpoint is not None:
        checkpoint.remove()

    with np.errstate(invalid="ignore", divide="ignore"):
        acceptance = record.accepted / record.attempts
    return ReplicaExchangeResult(
        positions_nm=record.positions_nm,
        energy_kj_mol=record.energy_kj_mol,
        replica=record.replica,
        time_ps=time_ps,
        temperatures_k=temperatures_k,
        acceptance=acceptance,
        attempts=record.attempts.copy(),
        wall_seconds=wall_seconds,
        steps_integrated=(total_exchanges - first) * settings.steps_per_exchange * n_states,
    )


@dataclass
class _Record:
    """What the run accumulates: recorded frames, the state → replica map and swap counters."""

    positions_nm: np.ndarray
    energy_kj_mol: np.ndarray
    replica: np.ndarray
    state_replica: np.ndarray  # [state] which replica is in each state now
    accepted: np.ndarray  # [pair]
    attempts: np.ndarray  # [pair]


def _strip_unit(value, length_unit):
    """Plain numbers in nm, whether or not ``value`` is an openmm Quantity."""
    return value.value_in_unit(length_unit) if hasattr(value, "value_in_unit") else value


def _start(contexts, positions_nm, temperatures_k, seed) -> None:
    """Minimise once, then place every replica there with velocities drawn at its state's temperature."""
    import openmm
    from openmm import unit

    first = contexts[0]
    first.setPositions(positions_nm * unit.nanometer)
    openmm.LocalEnergyMinimizer.minimize(first, MINIMIZATION_TOLERANCE_KJ_MOL_NM, MINIMIZATION_MAX_ITERATIONS)
    minimized = first.getState(getPositions=True).getPositions(asNumpy=True)
    for context, temperature_k in zip(contexts, temperatures_k):
        context.setPositions(minimized)
        context.setVelocitiesToTemperature(temperature_k * unit.kelvin,
                                           openmm_seed(seed, temperature_k, "velocities"))


def _advance(contexts, settings, record: _Record, frame0: int | None, frames_per_exchange: int,
             temperatures_k, step0: int) -> np.ndarray:
    """Run ``steps_per_exchange`` steps in every state; record frames from ``frame0`` unless it is None.

    Returns the potential energy (kJ/mol) of each state's configuration at the end. ``step0`` is the
    number of steps per replica before this call (for the message of a :class:`PhysicsError`).
    """
    energies = np.empty(len(contexts))
    for k, context in enumerate(contexts):
        if frame0 is None:
            # Equilibration: one call for the whole interval, one read of the energy.
            state = _step(context, settings.steps_per_exchange, temperatures_k[k], step0 + settings.steps_per_exchange)
        else:
            for i, frame in enumerate(range(frame0, frame0 + frames_per_exchange)):
                state = _step(context, settings.report_interval, temperatures_k[k],
                              step0 + (i + 1) * settings.report_interval, positions=True)
                record.positions_nm[k, frame] = state.getPositions(asNumpy=True)._value
                record.energy_kj_mol[k, frame] = state.getPotentialEnergy()._value
                record.replica[k, frame] = record.state_replica[k]
        energies[k] = state.getPotentialEnergy()._value
    return energies


def _step(context, steps: int, temperature_k: float, step_after: int, positions: bool = False):
    """Integrate ``steps`` steps and return the state (energy, and positions if asked), or raise
    :class:`PhysicsError` if the potential energy is not finite there."""
    import openmm

    try:
        context.getIntegrator().step(steps)
        state = context.getState(getPositions=positions, getEnergy=True)
    except openmm.OpenMMException as error:  # e.g. a NaN coordinate, on some platforms
        raise PhysicsError(f"replica exchange at {temperature_k:g} K: OpenMM stopped by step {step_after}: "
                           f"{str(error).splitlines()[0]}") from None
    energy = state.getPotentialEnergy()._value
    if not np.isfinite(energy):
        raise PhysicsError(f"replica exchange at {temperature_k:g} K: non-finite potential energy ({energy}) "
                           f"at step {step_after} per replica; the force field or structure gives an "
                           "undefined energy there")
    return state


def _attempt_swaps(contexts, temperatures_k, energies, exchange: int, rng: np.random.Generator,
                   record: _Record, count: bool) -> None:
    """Attempt the even or odd neighbour pairs (by the parity of ``exchange``); count them if ``count``."""
    for i in range(exchange % 2, len(contexts) - 1, 2):
        j = i + 1
        probability = swap_acceptance_probability(energies[i], energies[j], temperatures_k[i], temperatures_k[j])
        # One uniform per attempt, accepted or not, keeps the random stream independent of the outcomes.
        accept = rng.random() < probability
        if count:
            record.attempts[i] += 1
            record.accepted[i] += accept
        if accept:
            _swap_configurations(contexts[i], contexts[j], temperatures_k[i], temperatures_k[j])
            record.state_replica[[i, j]] = record.state_replica[[j, i]]


def _swap_configurations(context_i, context_j, temperature_i_k: float, temperature_j_k: float) -> None:
    """Exchange positions between two Contexts, rescaling velocities to the new temperature."""
    state_i = context_i.getState(getPositions=True, getVelocities=True)
    state_j = context_j.getState(getPositions=True, getVelocities=True)
    # Rescaling by sqrt(T_new / T_old) makes the kinetic energy distribution that of the new temperature,
    # so the thermostat has no transient to relax after the swap.
    scale_to_i = np.sqrt(temperature_i_k / temperature_j_k)
    context_i.setPositions(state_j.getPositions(asNumpy=True))
    context_i.setVelocities(state_j.getVelocities(asNumpy=True) * scale_to_i)
    context_j.setPositions(state_i.getPositions(asNumpy=True))
    context_j.setVelocities(state_i.getVelocities(asNumpy=True) / scale_to_i)


def _log_progress(log, settings, record: _Record, done: int, first: int, total: int, n_states: int,
                  elapsed_s: float) -> None:
    ns_per_replica = done * settings.steps_per_exchange * settings.timestep_fs * 1e-6
    steps_run = (done - first) * settings.steps_per_exchange * n_states
    ns_per_day = steps_run * settings.timestep_fs * 1e-6 / max(elapsed_s, 1e-9) * 86400
    eta_s = elapsed_s / max(done - first, 1) * (total - done)
    # Acceptance counts production attempts only, so it reads '-' during equilibration.
    with np.errstate(invalid="ignore", divide="ignore"):
        acceptance = record.accepted / record.attempts
    pairs = " ".join("-" if np.isnan(a) else f"{a:.2f}" for a in acceptance)
    phase = " (equilibration)" if done <= settings.equilibration_exchanges else ""
    log(f"  exchange {done}/{total}{phase}  {ns_per_replica:.3f} ns/replica  {ns_per_day:.1f} ns/day (all replicas)"
        f"  acceptance [{pairs}]  ETA {eta_s:.0f} s")


class _Checkpoint:
    """Everything a resumed run needs to continue bit for bit, in one :class:`boltzflow.checkpoints.Checkpoint`.

    It holds the frames recorded so far, every Context's OpenMM checkpoint (positions, velocities and
    the integrator's random state), the state → replica map, the swap counters, the state of the swap
    random generator and the number of exchanges done. ``settings`` describes the run's inputs: a
    checkpoint of other inputs, or an unreadable file, is ignored (and overwritten later).
    """

    def __init__(self, path: Path, settings):
        self.file = Checkpoint(path, settings)

    def load(self, record: _Record, contexts, rng: np.random.Generator) -> int | None:
        """Fill ``record``, ``contexts`` and ``rng`` and return the exchanges done, or None if unusable."""
        saved = self.file.load()
        if saved is None:
            return None
        frames = int(saved["frames"])
        record.positions_nm[:, :frames] = saved["positions_nm"]
        record.energy_kj_mol[:, :frames] = saved["energy_kj_mol"]
        record.replica[:, :frames] = saved["replica"]
        record.state_replica[:] = saved["state_replica"]
        record.accepted[:] = saved["accepted"]
        record.attempts[:] = saved["attempts"]
        rng.bit_generator.state = json.loads(str(saved["rng_state"]))
        for k, context in enumerate(contexts):
            context.loadCheckpoint(saved[f"context_{k}"].tobytes())
        return int(saved["exchanges_done"])

    def save(self, record: _Record, contexts, rng: np.random.Generator, exchanges_done: int,
             frames: int) -> None:
        contexts_saved = {f"context_{k}": np.frombuffer(context.createCheckpoint(), dtype=np.uint8)
                          for k, context in enumerate(contexts)}
        self.file.save(dict(
            exchanges_done=np.array(exchanges_done), frames=np.array(frames),
            positions_nm=record.positions_nm[:, :frames], energy_kj_mol=record.energy_kj_mol[:, :frames],
            replica=record.replica[:, :frames], state_replica=record.state_replica, accepted=record.accepted,
            attempts=record.attempts, rng_state=np.array(json.dumps(rng.bit_generator.state)), **contexts_saved))

    def remove(self) -> None:
        self.file.remove()


def replica_trajectories(values: np.ndarray, replica: np.ndarray) -> np.ndarray:
    """State-indexed ``values[k, frame]`` → replica-indexed ``[r, frame]``: each replica's value at each
    frame, in whichever state it was (``replica[k, frame]`` is the replica in state k, as recorded)."""
    values, replica = np.asarray(values), np.asarray(replica)
    by_replica = np.empty_like(values)
    by_replica[replica, np.arange(values.shape[1])[None, :]] = values
    return by_replica


def statistical_inefficiencies(observables: list[np.ndarray], replica: np.ndarray, state: int) -> tuple[float, float]:
    """(state-indexed, replica-indexed) statistical inefficiency in frames, each the largest over ``observables``.

    Each observable is state-indexed, ``[state, frame]``, or ``[run, state, frame]`` for independent runs
    of one ladder (``replica`` has the same shape); runs are independent series of one process. The first
    number is that of state ``state``'s time series; the second that of the replica trajectories (pooled
    over replicas and runs, which share one autocorrelation function at equilibrium). Swaps make a
    state's series look faster than the physics is: it hops between replicas, each of which carries its
    slow motions (a basin it has not left) with it from state to state, and returns later. A subsample
    by the state's inefficiency alone would then make MBAR's errors optimistic; take the larger of the
    two. Before following the replicas, each observable is standardized within each state (its mean
    and standard deviation there, over all runs): the replica's slow walk over temperatures alone (hot
    states have higher energies) is not a correlation of the samples within a state, and would inflate
    the replica number.
    """
    from boltzflow.md import runs_statistical_inefficiency as inefficiency

    replica = np.asarray(replica)
    replica = replica[None] if replica.ndim == 2 else replica
    by_run = [np.asarray(obs, dtype=float) for obs in observables]
    by_run = [obs[None] if obs.ndim == 2 else obs for obs in by_run]
    g_state = max(inefficiency(list(obs[:, state])) for obs in by_run)
    g_replica = max(inefficiency([trajectory for run_obs, run_replica in zip(_standardized_per_state(obs), replica)
                                  for trajectory in replica_trajectories(run_obs, run_replica)])
                    for obs in by_run)
    return g_state, g_replica


def _standardized_per_state(values: np.ndarray) -> np.ndarray:
    """``values[run, state, frame]`` standardized per state, over every run's frames."""
    spread = values.std(axis=(0, 2), keepdims=True)
    return (values - values.mean(axis=(0, 2), keepdims=True)) / np.where(spread > 0, spread, 1.0)


def write_amber_netcdf(path: str | Path, positions_nm: np.ndarray, topology, time_ps: np.ndarray) -> None:
    """Write frames ([frame, atom, 3], nm) as an AMBER NetCDF trajectory (read by mdtraj, VMD, cpptraj).

    The file stores Å (mdtraj converts); ``time_ps`` ([frame]) is stored as the frame times. The write is
    atomic: a temporary file in the same folder (ending in .nc, so mdtraj picks the format) is renamed
    onto ``path`` only when complete. No unit cell is written (implicit solvent, no periodic box).
    """
    import mdtraj

    positions_nm = np.asarray(positions_nm, dtype=np.float32)
    time_ps = np.asarray(time_ps, dtype=float)
    if positions_nm.ndim != 3 or positions_nm.shape[1:] != (topology.getNumAtoms(), 3):
        raise ValueError(f"positions_nm must have shape [frame, {topology.getNumAtoms()}, 3], "
                         f"got {positions_nm.shape}")
    if time_ps.shape != positions_nm.shape[:1]:
        raise ValueError(f"time_ps must have one entry per frame ({len(positions_nm)}), got {time_ps.shape}")
    trajectory = mdtraj.Trajectory(positions_nm, mdtraj.Topology.from_openmm(topology), time=time_ps)
    path = Path(path)
    if path.suffix != ".nc":
        raise ValueError(f"an AMBER NetCDF trajectory path must end in .nc, got {path}")
    with atomic_path(path) as temporary:
        trajectory.save_netcdf(str(temporary), force_overwrite=True)
