"""A molecule's model samples as AMBER trajectories: every sample, and an ensemble drawn by importance weight."""

import mdtraj
import numpy as np
import pytest

from boltzflow.estimators import draw_by_weight
from boltzflow.replica_exchange import write_amber_netcdf
from boltzflow.settings import SampleTrajectorySettings
from boltzflow.stages.datasets import samples_dataset
from boltzflow.stages.trajectories import sample_trajectories_stage
from boltzflow.systems import system_from_config
from workflow_helpers import ROOT, copy_workflow, snakemake

PDB = ROOT / "data/alanine_dipeptide.pdb"
BLOCK = {"type": "molecule", "pdb": str(PDB), "forcefield": ["amber99sbildn.xml", "amber99_obc.xml"],
         "constraints": "none", "temperatures": [300], "cv_units": "degrees",
         "cvs": {"phi": [4, 6, 8, 10], "psi": [6, 8, 10, 16]}, "states": {"phi_negative": {"phi": [-180, 0]}}}


@pytest.fixture(scope="module")
def system():
    return system_from_config("alanine_dipeptide", BLOCK)


def test_draws_follow_the_normalized_weights_and_never_take_a_zero_weight():
    # Ten samples with weights 1..10 (log-weights shifted far from 0, as real ones are), ten with weight 0.
    weights = np.arange(1.0, 11.0)
    log_w = np.concatenate([np.log(weights) - 700.0, np.full(10, -np.inf)])[np.random.default_rng(0).permutation(20)]
    n = 200_000
    counts = np.bincount(draw_by_weight(log_w, n, seed=1), minlength=20)
    zero = ~np.isfinite(log_w)
    assert counts[zero].sum() == 0
    expected = n * np.exp(log_w[~zero] + 700.0) / weights.sum()
    # Each count is binomial: within 5 standard deviations of its expectation.
    assert np.all(np.abs(counts[~zero] - expected) < 5 * np.sqrt(expected))


def test_draws_are_seeded_and_empty_without_a_finite_weight():
    log_w = np.log(np.arange(1.0, 6.0))
    np.testing.assert_array_equal(draw_by_weight(log_w, 50, seed=3), draw_by_weight(log_w, 50, seed=3))
    assert len(draw_by_weight(np.full(5, -np.inf), 50, seed=3)) == 0
    assert len(draw_by_weight(np.array([np.nan, -np.inf]), 50, seed=3)) == 0


def _samples(system, n=40, seed=0):
    """PDB positions with noise, energies made up: the weights are what the test sets."""
    rng = np.random.default_rng(seed)
    molecule = system.load_molecule()
    x = molecule.positions_nm[None] + 0.01 * rng.normal(size=(n, molecule.n_atoms, 3))
    log_q = rng.normal(size=n)
    u = rng.normal(size=n)
    u[:5] = np.nan  # non-finite energy: weight 0
    log_q[5:10] = np.nan  # outside the coordinate map: weight 0
    x[10] = np.nan  # a sample that lost its positions (and so its energy)
    u[10] = np.nan
    return samples_dataset(system, x, log_q, u)


def test_samples_carry_their_cvs(system):
    samples = _samples(system)
    values = system.cv_values(samples["positions"].values)
    np.testing.assert_allclose(samples["cv_values"].sel(cv="psi").values, values["psi"])
    assert list(samples["cv"].values) == ["phi", "psi"]
    assert samples["cv_values"].attrs["units"] == "degrees"


def test_the_resampled_ensemble_uses_the_reweighting_weights(system):
    samples = _samples(system)
    every, resampled = sample_trajectories_stage(samples, SampleTrajectorySettings(resampled_frames=5000, seed=2),
                                                 log=lambda _: None)
    np.testing.assert_array_equal(every["sample"].values, [i for i in range(40) if i != 10])
    np.testing.assert_array_equal(every["positions"].values, samples["positions"].values[every["sample"].values])
    drawn = resampled["sample"].values
    assert len(drawn) == 5000
    assert set(drawn) <= set(range(11, 40))  # never a sample the reweighting gives weight 0
    np.testing.assert_array_equal(resampled["positions"].values, samples["positions"].values[drawn])
    log_w = samples["log_w"].values
    heaviest = int(np.argmax(log_w))
    expected = 5000 * np.exp(log_w[heaviest] - np.logaddexp.reduce(log_w[11:]))
    assert abs(np.sum(drawn == heaviest) - expected) < 5 * np.sqrt(expected)


def test_written_trajectory_reads_back_with_mdtraj(system, tmp_path):
    samples = _samples(system)
    every, resampled = sample_trajectories_stage(samples, SampleTrajectorySettings(resampled_frames=100),
                                                 log=lambda _: None)
    topology = system.load_molecule().topology
    for frames, name in [(every, "flow_trajectory.nc"), (resampled, "flow_resampled.nc")]:
        write_amber_netcdf(tmp_path / name, frames["positions"].values, topology, frames["sample"].values)
        trajectory = mdtraj.load(str(tmp_path / name), top=str(PDB))
        assert trajectory.n_atoms == 22
        assert trajectory.n_frames == frames.sizes["frame"]
        # AMBER NetCDF stores float32 Å.
        np.testing.assert_allclose(trajectory.xyz, frames["positions"].values, rtol=2e-7, atol=1e-6)
        np.testing.assert_array_equal(trajectory.time, frames["sample"].values)


def test_no_finite_weight_writes_an_empty_resampled_trajectory(system, tmp_path):
    samples = _samples(system)
    samples["log_w"][:] = -np.inf
    _, resampled = sample_trajectories_stage(samples, SampleTrajectorySettings(), log=lambda _: None)
    write_amber_netcdf(tmp_path / "empty.nc", resampled["positions"].values, system.load_molecule().topology,
                       resampled["sample"].values)
    assert mdtraj.load(str(tmp_path / "empty.nc"), top=str(PDB)).n_frames == 0


def test_the_default_target_writes_every_molecule_estimator_as_trajectories(tmp_path):
    workdir = copy_workflow(tmp_path)
    result = snakemake(workdir, "-n", "--cores", "1", "--configfile", "config/test.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout.split("Job stats:", 1)[1].split("total", 1)[0]
    # alanine dipeptide runs seven estimators in config/test.yaml (score_exact, flow_ladder off); the toys none.
    assert ["sample_trajectories", "7"] in [line.split() for line in table.splitlines()]
    assert "samples/flow_resampled.nc" in result.stdout and "samples/score_exact_resampled.nc" not in result.stdout
    assert "double_well/samples/flow_trajectory.nc" not in result.stdout
