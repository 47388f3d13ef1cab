"""Runtime physics errors: an energy unbounded below or not finite stops MD within one report interval,
with one line naming the system, the temperature and what happened; so do a NaN energy in replica
exchange and a failing MBAR."""

import re
import subprocess
import sys

import numpy as np
import openmm
import pytest
import xarray as xr
import yaml
from test_replica_exchange import _restrained_particles

from boltzflow.md import ESCAPE_WIDTHS, escape_limits, run_langevin
from boltzflow.physics_errors import PhysicsError
from boltzflow.replica_exchange import run_replica_exchange
from boltzflow.settings import LangevinSettings, ReplicaExchangeSettings
from boltzflow.stages.mbar import mbar_stage
from boltzflow.stages.md import md_stage
from boltzflow.systems import State, Toy2DSystem
from workflow_helpers import ROOT, copy_workflow, snakemake

BOX = {"x": (-1.0, 1.0), "y": (-1.0, 1.0)}
SETTINGS = LangevinSettings(walkers=64, steps=2000, equilibration_steps=500, report_interval=50)
#: The two energies of the issue: unbounded below (walkers run away) and undefined for x <= 0.
BAD_ENERGIES = {"-x^2-y^2": r"walker \d+ escaped to [xy] = -?[\d.]+ nm at step \d+, beyond \[-21, 21\] nm",
                "log(x)": r"non-finite energy at step 0 "}


def _toy(energy, bounds=BOX):
    everywhere = State("all", ({"x": (-np.inf, np.inf), "y": (-np.inf, np.inf)},))
    return Toy2DSystem("bad", energy, (300.0,), (everywhere,), bounds=bounds)


def _one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("MD of bad at 300 K: ")
    return message


def test_escape_limits_are_the_starting_box_widened_by_the_stated_widths():
    limits = escape_limits(_toy("x^2", bounds={"x": (-1.0, 3.0), "y": (0.0, 1.0)}))
    assert limits == {"x": (-1.0 - 4 * ESCAPE_WIDTHS, 3.0 + 4 * ESCAPE_WIDTHS), "y": (-ESCAPE_WIDTHS, 1 + ESCAPE_WIDTHS)}


@pytest.mark.parametrize("energy", BAD_ENERGIES)
def test_langevin_stops_at_the_first_report_with_one_line(energy):
    with pytest.raises(PhysicsError) as error:
        run_langevin(_toy(energy), 300.0, SETTINGS, log=lambda _: None)
    message = _one_line(error)
    assert re.search(BAD_ENERGIES[energy], message), message
    # Checked every report interval: the unbounded walkers escape within the equilibration, long
    # before the run would end (a check at the end only would report step 2500).
    step = int(re.search(r"at step (\d+)", message).group(1))
    assert step % SETTINGS.report_interval == 0 and step < SETTINGS.equilibration_steps


def test_a_walker_that_leaves_the_defined_region_later_is_caught_when_it_does():
    # Finite where the walkers start (x >= 0.1), but the force -1/x pulls them to x <= 0 where log is undefined.
    with pytest.raises(PhysicsError) as error:
        run_langevin(_toy("log(x) + y^2", bounds={"x": (0.1, 1.0), "y": (-1.0, 1.0)}), 300.0, SETTINGS,
                     log=lambda _: None)
    message = _one_line(error)
    step = int(re.search(r"non-finite energy at step (\d+) ", message).group(1))
    assert 0 < step < SETTINGS.equilibration_steps + SETTINGS.steps


def test_bounded_energy_far_out_of_its_box_is_not_an_escape():
    # A harmonic well twice as wide as the box: walkers leave the box, but not by ten widths.
    samples = md_stage(_toy("0.5*x^2 + 0.5*y^2", bounds={"x": (-0.5, 0.5), "y": (-0.5, 0.5)}), 300.0, SETTINGS,
                       log=lambda _: None)
    assert np.abs(samples["positions"].values).max() > 0.5


@pytest.mark.parametrize("energy", BAD_ENERGIES)
def test_md_stage_raises_the_one_line(energy):
    with pytest.raises(PhysicsError) as error:
        md_stage(_toy(energy), 300.0, SETTINGS, log=lambda _: None)
    assert re.search(BAD_ENERGIES[energy], _one_line(error))


def test_replica_exchange_stops_on_a_non_finite_energy_naming_the_temperature():
    system, topology, anchors = _restrained_particles(4)
    # Undefined once particle 0 moves 0.15 nm (about two thermal widths) along x from its anchor, and its
    # force pushes it there.
    trap = openmm.CustomExternalForce("10*sqrt(0.15 - x)")
    trap.addParticle(0, [])
    system.addForce(trap)
    settings = ReplicaExchangeSettings(steps_per_exchange=50, exchanges=400, equilibration_exchanges=10,
                                       report_interval=10, timestep_fs=2.0, seed=3)
    with pytest.raises(PhysicsError) as error:
        run_replica_exchange(system, topology, anchors, [300.0, 340.0, 390.0], settings, log=lambda _: None)
    message = str(error.value)
    assert "\n" not in message
    assert re.fullmatch(r"replica exchange at (300|340|390) K: non-finite potential energy \(nan\) at step \d+ "
                        r"per replica; .*", message), message


@pytest.mark.parametrize("energy", BAD_ENERGIES)
def test_md_rule_fails_within_seconds_with_the_line_last_in_its_log(tmp_path, energy):
    workdir = copy_workflow(tmp_path / "wf")
    config = {"run": ["bad"], "systems": {"bad": {
        "type": "toy2d", "energy": energy, "temperatures": [300], "bounds": {"x": [-1, 1], "y": [-1, 1]},
        "states": {"left": {"x": [-1, 0]}, "right": {"x": [0, 1]}}}}}
    (workdir / "bad.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "--cores", "1", "results/bad/md/300K.nc", "--configfile", "bad.yaml", timeout=120)
    assert result.returncode != 0
    log = (workdir / "results/bad/logs/md_300K.log").read_text().strip().splitlines()
    assert log[-1].startswith("boltzflow: MD of bad at 300 K: ")
    assert re.search(BAD_ENERGIES[energy], log[-1])
    assert not any("Traceback" in line for line in log)
    # Snakemake's own error output carries the same line, beside the failed rule.
    assert log[-1] in result.stderr


def _md_file(temperature_k, energy, rng):
    xy = rng.normal(scale=0.1, size=(len(energy), 2))
    return xr.Dataset({"positions": (("sample", "cv"), xy), "energy": ("sample", np.asarray(energy, dtype=float))},
                      attrs={"temperature_k": temperature_k})


def _ladder_toy():
    return Toy2DSystem("bad", "x^2 + y^2", (300.0, 400.0), (State("all", (BOX,)),), bounds=BOX)


def test_mbar_names_the_file_with_a_non_finite_energy():
    rng = np.random.default_rng(0)
    md = [_md_file(300.0, rng.normal(size=50), rng), _md_file(400.0, [*rng.normal(size=48), np.nan, -np.inf], rng)]
    with pytest.raises(PhysicsError, match=r"^MBAR of bad: 2 of 50 samples in md/400K.nc have a non-finite energy$"):
        mbar_stage(_ladder_toy(), md, bins=10, log=lambda _: None, names=["md/300K.nc", "md/400K.nc"])


def test_a_failing_pymbar_is_one_line():
    # Energies of walkers run down an unbounded energy: finite, but exp(-u) overflows every MBAR sum.
    rng = np.random.default_rng(0)
    md = [_md_file(t, rng.choice([-1e306, 1e306], size=20), rng) for t in (300.0, 400.0)]
    with pytest.raises(PhysicsError) as error:
        mbar_stage(_ladder_toy(), md, bins=10, log=lambda _: None)
    assert re.fullmatch(r"MBAR of bad over 300, 400 K failed: ParameterError: [^\n]+", str(error.value)), error.value


def test_script_adapter_logs_no_pymbar_banner_and_ends_a_physics_error_with_its_line(tmp_path):
    log = tmp_path / "job.log"
    script = f"""
import sys, types
sys.path.insert(0, {str(ROOT / "workflow/scripts")!r})
from _bootstrap import start
start(types.SimpleNamespace(log=[{str(log)!r}], scriptdir={str(ROOT / "workflow/scripts")!r}))
import pymbar
from pymbar import timeseries
print("imported")
from boltzflow.physics_errors import PhysicsError
raise PhysicsError("MD of toy at 300 K: non-finite energy at step 50")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert log.read_text().splitlines() == ["imported", "boltzflow: MD of toy at 300 K: non-finite energy at step 50"]
    assert result.stderr.strip() == "boltzflow: MD of toy at 300 K: non-finite energy at step 50"
