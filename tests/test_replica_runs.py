"""Independent replica exchange runs of alanine dipeptide, pooled per temperature (real OpenMM, short runs)."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from boltzflow.replica_exchange import run_seed, statistical_inefficiencies
from boltzflow.stages.md import replica_exchange_stage, replica_state_stage
from boltzflow.systems import system_from_config

ROOT = Path(__file__).resolve().parents[1]
TEMPERATURES_K = [300.0, 400.0, 550.0]
MD = {"steps_per_exchange": 50, "exchanges": 120, "equilibration_exchanges": 5, "report_interval": 25,
      "platform": "Reference", "seed": 3}


def _quiet(_message):
    pass


@pytest.fixture(scope="module")
def system():
    block = yaml.safe_load((ROOT / "config/config.yaml").read_text())["systems"]["alanine_dipeptide"]
    block = {**block, "temperatures": TEMPERATURES_K, "pdb": str(ROOT / block["pdb"])}
    return system_from_config("alanine_dipeptide", block)


@pytest.fixture(scope="module")
def runs(system):
    settings = system.md_settings(MD)
    return [replica_exchange_stage(system, settings, log=_quiet, run=run) for run in (1, 2)]


def test_run_one_keeps_the_seed_and_the_others_differ():
    assert run_seed(7, 1) == 7
    seeds = {run_seed(7, run) for run in range(1, 6)}
    assert len(seeds) == 5 and all(0 < seed < 2 ** 31 for seed in seeds)
    assert run_seed(7, 2) == run_seed(7, 2) != run_seed(8, 2)


def test_runs_are_independent_and_their_seeds_recorded(runs):
    assert [run.attrs["run"] for run in runs] == [1, 2]
    assert runs[0].attrs["seed"] == MD["seed"] and runs[1].attrs["seed"] == run_seed(MD["seed"], 2)
    assert not np.array_equal(runs[0]["energy"].values, runs[1]["energy"].values)


def test_pooled_temperature_keeps_every_frame_of_every_run_in_order(system, runs):
    n_states, n_frames = runs[0]["energy"].shape
    pooled = replica_state_stage(system, runs, 400.0, log=_quiet)
    assert pooled.sizes["sample"] == 2 * n_frames
    for r, run in enumerate(runs):
        block = slice(r * n_frames, (r + 1) * n_frames)
        np.testing.assert_array_equal(pooled["energy"].values[block], run["energy"].values[1])
        np.testing.assert_array_equal(pooled["positions"].values[block], run["positions"].values[1])
        np.testing.assert_array_equal(pooled["time"].values[block], run["time"].values)
        np.testing.assert_array_equal(pooled["run"].values[block], r + 1)
        # Replicas are numbered across runs: run r's replica i is r * n_states + i.
        np.testing.assert_array_equal(pooled["replica"].values[block], run["replica"].values[1] + r * n_states)


def test_pooled_inefficiency_is_the_larger_of_state_and_replica_series_over_all_runs(system, runs):
    pooled = replica_state_stage(system, runs, 300.0, log=_quiet)
    g = pooled.attrs["statistical_inefficiency_frames"]
    g_state = pooled.attrs["statistical_inefficiency_state_frames"]
    g_replica = pooled.attrs["statistical_inefficiency_replica_frames"]
    assert g == max(g_state, g_replica) >= 1
    # The energy alone is one of the observables: the stored value is at least its inefficiency.
    energies = np.stack([run["energy"].values for run in runs])
    replica = np.stack([run["replica"].values for run in runs])
    g_energy_state, g_energy_replica = statistical_inefficiencies([energies], replica, 0)
    assert g_state >= g_energy_state - 1e-9 and g_replica >= g_energy_replica - 1e-9
    # One frame per g in each run is marked independent.
    n_frames = runs[0].sizes["frame"]
    kept = pooled["independent"].values.reshape(2, n_frames).sum(axis=1)
    np.testing.assert_array_equal(kept, int(np.ceil(n_frames / g)) if g > 1 else n_frames)


def test_runs_of_different_ladders_are_refused(system, runs):
    other = runs[1].assign_coords(temperature=runs[1]["temperature"].values + 1.0)
    with pytest.raises(ValueError, match="share the ladder"):
        replica_state_stage(system, [runs[0], other], 300.0, log=_quiet)
