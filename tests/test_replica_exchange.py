"""Temperature replica exchange against analytic truths, and its AMBER NetCDF output against mdtraj."""

import dataclasses

import mdtraj
import numpy as np
import openmm
import openmm.app
import pytest

from boltzflow.replica_exchange import (
    ReplicaExchangeInterrupted,
    ReplicaExchangeSettings,
    run_replica_exchange,
    swap_acceptance_probability,
    write_amber_netcdf,
)

R_KJ_MOL_K = 8.314462618e-3
SPRING_KJ_MOL_NM2 = 500.0
MASS_AMU = 12.0


def _restrained_particles(n_particles, spring_kj_mol_nm2=SPRING_KJ_MOL_NM2):
    """Independent particles, each held to its own anchor by an isotropic 3D harmonic spring.

    The potential energy is a sum of 3N independent quadratic terms, so its mean at temperature T is
    3N/2 kT exactly. Anchors zigzag so that consecutive quadruples have a well defined dihedral.
    """
    anchors_nm = np.array([[0.15 * i, 0.1 * (i % 2), 0.05 * (i % 3)] for i in range(n_particles)])
    system = openmm.System()
    force = openmm.CustomExternalForce("0.5*k*((x-x0)^2 + (y-y0)^2 + (z-z0)^2)")
    force.addGlobalParameter("k", spring_kj_mol_nm2)
    for name in ("x0", "y0", "z0"):
        force.addPerParticleParameter(name)
    for anchor in anchors_nm:
        system.addParticle(MASS_AMU)
        force.addParticle(system.getNumParticles() - 1, list(anchor))
    system.addForce(force)
    topology = openmm.app.Topology()
    residue = topology.addResidue("RES", topology.addChain())
    for i in range(n_particles):
        topology.addAtom(f"C{i + 1}", openmm.app.Element.getBySymbol("C"), residue)
    return system, topology, anchors_nm


def _quiet(_message):
    pass


SMALL = ReplicaExchangeSettings(steps_per_exchange=20, exchanges=40, equilibration_exchanges=10,
                                report_interval=10, seed=5)
SMALL_TEMPERATURES_K = [300.0, 340.0, 390.0]


def test_swap_probability_matches_a_hand_computed_case():
    # β_i − β_j = (1/R)(1/300 − 1/330) = 1/(R · 3300) = 1/27.4377266394 = 0.0364461682 mol/kJ;
    # (β_i − β_j)(E_i − E_j) = 0.0364461682 · (−100 − (−90)) = −0.364461682; exp(−0.364461682) = 0.69457045.
    assert swap_acceptance_probability(-100.0, -90.0, 300.0, 330.0) == pytest.approx(0.69457045, rel=1e-8)
    # The reverse arrangement (the lower energy already at the colder state... swapped) is favourable: 1.
    assert swap_acceptance_probability(-90.0, -100.0, 300.0, 330.0) == 1.0
    # Equal energies or equal temperatures leave the product of Boltzmann factors unchanged: always accept.
    assert swap_acceptance_probability(-90.0, -90.0, 300.0, 330.0) == 1.0
    assert swap_acceptance_probability(-100.0, -90.0, 300.0, 300.0) == 1.0


def test_settings_reject_bad_values_naming_the_field():
    with pytest.raises(ValueError, match="report_interval"):
        ReplicaExchangeSettings(steps_per_exchange=500, report_interval=300)
    with pytest.raises(ValueError, match="seed"):
        ReplicaExchangeSettings(seed=0)
    with pytest.raises(ValueError, match="timestep_fs"):
        ReplicaExchangeSettings(timestep_fs=-1.0)
    with pytest.raises(ValueError, match="equilibration_exchanges"):
        ReplicaExchangeSettings(equilibration_exchanges=-1)


def test_small_run_has_the_documented_shapes_and_is_reproducible():
    system, topology, anchors_nm = _restrained_particles(5)
    result = run_replica_exchange(system, topology, anchors_nm, SMALL_TEMPERATURES_K, SMALL, log=_quiet)
    n_states, n_frames = 3, SMALL.exchanges * SMALL.steps_per_exchange // SMALL.report_interval
    assert result.positions_nm.shape == (n_states, n_frames, 5, 3)
    assert result.positions_nm.dtype == np.float32
    assert result.energy_kj_mol.shape == result.replica.shape == (n_states, n_frames)
    assert result.energy_kj_mol.dtype == np.float64
    np.testing.assert_allclose(result.time_ps, SMALL.report_interval * 2e-3 * np.arange(1, n_frames + 1))
    # Positions in nm: displacements from the anchors are of order sqrt(kT/k) ≈ 0.07 nm, not Å.
    assert np.abs(result.positions_nm - anchors_nm).max() < 0.5
    # The recorded energy is the potential of the recorded positions.
    displacement = result.positions_nm.astype(float) - anchors_nm
    np.testing.assert_allclose(result.energy_kj_mol, 0.5 * SPRING_KJ_MOL_NM2 * (displacement ** 2).sum(axis=(2, 3)),
                               rtol=1e-4, atol=1e-4)
    # At every frame each replica is in exactly one state.
    np.testing.assert_array_equal(np.sort(result.replica, axis=0), np.arange(n_states)[:, None].repeat(n_frames, 1))
    # Even pairs are tried on even exchanges and odd pairs on odd ones: production exchanges 10..49.
    np.testing.assert_array_equal(result.attempts, [20, 20])
    assert np.all((result.acceptance >= 0) & (result.acceptance <= 1))
    assert result.steps_integrated == (SMALL.exchanges + SMALL.equilibration_exchanges) * 20 * n_states

    again = run_replica_exchange(system, topology, anchors_nm, SMALL_TEMPERATURES_K, SMALL, log=_quiet)
    for name in ("positions_nm", "energy_kj_mol", "replica", "acceptance"):
        np.testing.assert_array_equal(getattr(result, name), getattr(again, name))
    other_seed = dataclasses.replace(SMALL, seed=6)
    other = run_replica_exchange(system, topology, anchors_nm, SMALL_TEMPERATURES_K, other_seed, log=_quiet)
    assert not np.array_equal(result.energy_kj_mol, other.energy_kj_mol)


def test_mean_energy_in_every_state_is_the_equipartition_value():
    n_particles = 6
    system, topology, anchors_nm = _restrained_particles(n_particles)
    temperatures_k = np.array([300.0, 360.0, 430.0, 520.0])
    # Frequent exchanges and weak friction make a wrong criterion visible: always accepting, or the
    # criterion with E_i and E_j swapped, moves the mean energies by 8-30 standard errors here.
    settings = ReplicaExchangeSettings(steps_per_exchange=20, exchanges=4000, equilibration_exchanges=50,
                                       report_interval=20, friction_per_ps=1.0, seed=11)
    result = run_replica_exchange(system, topology, anchors_nm, temperatures_k, settings, log=_quiet)
    # Swaps must actually happen for the test to check the acceptance criterion.
    assert np.all(result.acceptance > 0.1)
    assert all(len(np.unique(result.replica[k])) == len(temperatures_k) for k in range(len(temperatures_k)))
    blocks = 20
    for k, temperature_k in enumerate(temperatures_k):
        expected = 1.5 * n_particles * R_KJ_MOL_K * temperature_k
        block_means = result.energy_kj_mol[k].reshape(blocks, -1).mean(axis=1)
        standard_error = block_means.std(ddof=1) / np.sqrt(blocks)
        # BAOAB-type Langevin samples a harmonic configuration without time-step bias, so only noise.
        assert abs(block_means.mean() - expected) < 4 * standard_error, (temperature_k, block_means.mean(), expected)


def test_interrupted_run_resumes_bit_for_bit(tmp_path):
    system, topology, anchors_nm = _restrained_particles(4)
    reference = run_replica_exchange(system, topology, anchors_nm, SMALL_TEMPERATURES_K, SMALL, log=_quiet)
    checkpoint = tmp_path / "remd.checkpoint.npz"
    # Checkpoints every 5 of the 50 exchanges: stopping after 27 loses 2 exchanges, which are redone.
    with pytest.raises(ReplicaExchangeInterrupted):
        run_replica_exchange(system, topology, anchors_nm, SMALL_TEMPERATURES_K, SMALL, log=_quiet,
                             checkpoint_path=checkpoint, _stop_after_exchanges=27)
    assert checkpoint.exists()
    messages = []
    resumed = run_replica_exchange(system, topology, anchors_nm, SMALL_TEMPERATURES_K, SMALL, log=messages.append,
                                   checkpoint_path=checkpoint)
    assert any("resuming" in message and "25/50" in message for message in messages)
    assert resumed.steps_integrated == 25 * SMALL.steps_per_exchange * 3
    for name in ("positions_nm", "energy_kj_mol", "replica", "acceptance", "attempts"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(reference, name))
    assert not checkpoint.exists()


def test_checkpoint_of_other_settings_is_ignored(tmp_path):
    system, topology, anchors_nm = _restrained_particles(4)
    checkpoint = tmp_path / "remd.checkpoint.npz"
    with pytest.raises(ReplicaExchangeInterrupted):
        run_replica_exchange(system, topology, anchors_nm, SMALL_TEMPERATURES_K, SMALL, log=_quiet,
                             checkpoint_path=checkpoint, _stop_after_exchanges=12)
    other_seed = dataclasses.replace(SMALL, seed=9)
    messages = []
    result = run_replica_exchange(system, topology, anchors_nm, SMALL_TEMPERATURES_K, other_seed,
                                  log=messages.append, checkpoint_path=checkpoint)
    assert not any("resuming" in message for message in messages)
    fresh = run_replica_exchange(system, topology, anchors_nm, SMALL_TEMPERATURES_K, other_seed, log=_quiet)
    np.testing.assert_array_equal(result.positions_nm, fresh.positions_nm)


def _dihedral_rad(p0, p1, p2, p3):
    """IUPAC dihedral of four points: atan2(|b2| b1·(b2×b3), (b1×b2)·(b2×b3)), b1 = p1 − p0 etc."""
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=-1) * np.einsum("...i,...i", b1, n2)
    return np.arctan2(y, np.einsum("...i,...i", n1, n2))


def test_amber_netcdf_round_trips_through_mdtraj(tmp_path):
    system, topology, anchors_nm = _restrained_particles(4)
    positions_nm = anchors_nm + np.random.default_rng(0).normal(scale=0.05, size=(7, 4, 3))
    time_ps = 0.2 * np.arange(1, 8)
    pdb_path = tmp_path / "particles.pdb"
    with open(pdb_path, "w") as handle:
        openmm.app.PDBFile.writeFile(topology, anchors_nm * openmm.unit.nanometer, handle)
    nc_path = tmp_path / "state_300K.nc"
    write_amber_netcdf(nc_path, positions_nm, topology, time_ps)
    write_amber_netcdf(nc_path, positions_nm, topology, time_ps)  # overwriting is allowed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["particles.pdb", "state_300K.nc"]  # no temp left

    loaded = mdtraj.load(str(nc_path), top=str(pdb_path))
    np.testing.assert_allclose(loaded.xyz, positions_nm, atol=1e-4)
    np.testing.assert_allclose(loaded.time, time_ps, rtol=1e-6)
    by_hand = _dihedral_rad(*np.moveaxis(positions_nm, 1, 0))
    by_mdtraj = mdtraj.compute_dihedrals(loaded, [[0, 1, 2, 3]])[:, 0]
    np.testing.assert_allclose(by_mdtraj, by_hand, atol=1e-3)
    # The file really is AMBER convention: coordinates in Å.
    import netCDF4
    with netCDF4.Dataset(nc_path) as dataset:
        assert dataset.Conventions == "AMBER"
        assert dataset["coordinates"].units == "angstrom"
        np.testing.assert_allclose(dataset["coordinates"][:], 10 * positions_nm, atol=1e-3)


def test_unreadable_checkpoint_is_ignored(tmp_path):
    system, topology, anchors_nm = _restrained_particles(4)
    checkpoint = tmp_path / "remd.checkpoint.npz"
    checkpoint.write_bytes(b"not a checkpoint")
    result = run_replica_exchange(system, topology, anchors_nm, SMALL_TEMPERATURES_K, SMALL, log=_quiet,
                                  checkpoint_path=checkpoint)
    fresh = run_replica_exchange(system, topology, anchors_nm, SMALL_TEMPERATURES_K, SMALL, log=_quiet)
    np.testing.assert_array_equal(result.positions_nm, fresh.positions_nm)
    assert not checkpoint.exists()


def test_frames_are_checked_as_they_come_and_a_failing_check_stops_the_run():
    system, topology, anchors_nm = _restrained_particles(5)
    seen = []
    result = run_replica_exchange(system, topology, anchors_nm, SMALL_TEMPERATURES_K, SMALL, log=_quiet,
                                  check_frames=lambda positions, time_ps: seen.append((positions.copy(), time_ps)))
    # Every recorded frame exactly once, in order, with its time, over several calls (not one at the end).
    assert len(seen) > 5
    np.testing.assert_array_equal(np.concatenate([positions for positions, _ in seen], axis=1), result.positions_nm)
    np.testing.assert_array_equal(np.concatenate([time_ps for _, time_ps in seen]), result.time_ps)

    class Inverted(Exception):
        pass

    calls = []

    def fail(positions, time_ps):
        calls.append(time_ps[-1])
        raise Inverted

    with pytest.raises(Inverted):
        run_replica_exchange(system, topology, anchors_nm, SMALL_TEMPERATURES_K, SMALL, log=_quiet, check_frames=fail)
    assert calls == [seen[0][1][-1]] and calls[0] < result.time_ps[-1] / 5


@pytest.mark.parametrize("exchanges", [40, 41])  # the last exchange on a progress line, and off one
def test_a_run_checks_its_last_frames_and_a_resumed_run_its_checkpoint_s(tmp_path, exchanges):
    system, topology, anchors_nm = _restrained_particles(5)
    settings = dataclasses.replace(SMALL, exchanges=exchanges)
    seen = []
    result = run_replica_exchange(system, topology, anchors_nm, SMALL_TEMPERATURES_K, settings, log=_quiet,
                                  check_frames=lambda positions, time_ps: seen.append(time_ps))
    np.testing.assert_array_equal(np.concatenate(seen), result.time_ps)
    # Interrupted after a checkpoint that holds frames no check has seen yet: the resumed run checks them.
    checkpoint = tmp_path / "run.checkpoint"
    with pytest.raises(ReplicaExchangeInterrupted):
        run_replica_exchange(system, topology, anchors_nm, SMALL_TEMPERATURES_K, settings, log=_quiet,
                             checkpoint_path=checkpoint, _stop_after_exchanges=25,
                             check_frames=lambda positions, time_ps: None)
    resumed = []
    run_replica_exchange(system, topology, anchors_nm, SMALL_TEMPERATURES_K, settings, log=_quiet,
                         checkpoint_path=checkpoint, check_frames=lambda positions, time_ps: resumed.append(time_ps))
    np.testing.assert_array_equal(np.concatenate(resumed), result.time_ps)
