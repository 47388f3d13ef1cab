"""OpenMM Langevin MD of a toy system against the analytic Boltzmann distribution of a harmonic well."""

import numpy as np
import pytest

from boltzflow.md import run_langevin
from boltzflow.settings import LangevinSettings
from boltzflow.stages.md import md_stage
from boltzflow.systems import State, Toy2DSystem, kt_kj_mol

SETTINGS = LangevinSettings(walkers=200, steps=4000, equilibration_steps=500, report_interval=20,
                            timestep_fs=5.0, friction_per_ps=5.0, seed=7)


def _harmonic(kx=300.0, ky=100.0):
    box = State("all", ({"x": (-np.inf, np.inf), "y": (-np.inf, np.inf)},))
    return Toy2DSystem("harmonic", f"0.5*{kx}*x^2 + 0.5*{ky}*(y-0.2)^2", (300.0,), (box,),
                       bounds={"x": (-0.3, 0.3), "y": (-0.1, 0.5)})


def test_md_samples_the_harmonic_boltzmann_distribution():
    system = _harmonic()
    samples = md_stage(system, 300.0, SETTINGS, log=lambda _: None)
    xy = samples["positions"].values
    kt = kt_kj_mol(300.0)
    n = len(xy)
    assert n > 2000
    # Var x = kT / k_x, Var y = kT / k_y; the mean of y is the well centre. The relative standard error
    # of a variance from n independent samples is sqrt(2 / n); allow 4 of them (plus the O(dt²) bias).
    tolerance = 4 * np.sqrt(2 / n) + 0.02
    assert abs(xy[:, 0].var() / (kt / 300.0) - 1) < tolerance
    assert abs(xy[:, 1].var() / (kt / 100.0) - 1) < tolerance
    assert abs(xy[:, 1].mean() - 0.2) < 4 * np.sqrt(kt / 100.0 / n)
    # Energies stored are E(x, y) alone (no z restraint): mean potential energy of a 2D well is kT.
    assert abs(samples["energy"].values.mean() / kt - 1) < 4 * np.sqrt(1 / n) + 0.02
    np.testing.assert_allclose(samples["energy"].values, system.energy_kj_mol(xy), rtol=1e-12)


def test_md_is_reproducible_for_a_seed():
    system = _harmonic()
    settings = LangevinSettings(walkers=16, steps=400, equilibration_steps=100, report_interval=20, seed=3)
    first = md_stage(system, 300.0, settings, log=lambda _: None)
    second = md_stage(system, 300.0, settings, log=lambda _: None)
    np.testing.assert_array_equal(first["positions"].values, second["positions"].values)
    other = md_stage(system, 300.0, LangevinSettings(**{**settings.__dict__, "seed": 4}), log=lambda _: None)
    assert not np.array_equal(first["positions"].values, other["positions"].values)


def test_md_resumes_from_a_checkpoint_bit_for_bit(tmp_path):
    system = _harmonic()
    settings = LangevinSettings(walkers=8, steps=1000, equilibration_steps=100, report_interval=10, seed=11)
    reference = run_langevin(system, 300.0, settings, log=lambda _: None)

    # Simulate a kill after 40 % of production: a run that stops while saving its checkpoints.
    class Killed(Exception):
        pass

    messages = []

    def log_and_die(message):
        messages.append(message)
        if "step 500/1100" in message:
            raise Killed

    checkpoint = tmp_path / "run.checkpoint"
    with pytest.raises(Killed):
        run_langevin(system, 300.0, settings, log=log_and_die, checkpoint_path=checkpoint)
    assert (checkpoint / "state.npz").exists()

    resumed_log = []
    resumed = run_langevin(system, 300.0, settings, log=resumed_log.append, checkpoint_path=checkpoint)
    assert any("resuming from checkpoint: 30/100 frames" in m for m in resumed_log), resumed_log
    np.testing.assert_array_equal(resumed.positions_nm, reference.positions_nm)
    assert not checkpoint.exists()

    # A checkpoint of other settings is ignored, not mixed in.
    other = LangevinSettings(**{**settings.__dict__, "seed": 12})
    with pytest.raises(Killed):
        run_langevin(system, 300.0, other, log=log_and_die, checkpoint_path=checkpoint)
    again = run_langevin(system, 300.0, settings, log=lambda _: None, checkpoint_path=checkpoint)
    np.testing.assert_array_equal(again.positions_nm, reference.positions_nm)
