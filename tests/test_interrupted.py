"""A killed MD job (Langevin walkers, or replica exchange) resumes from its checkpoint and ends exactly where
an uninterrupted run ends."""

import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import xarray as xr
import yaml

from workflow_helpers import copy_workflow, snakemake

pytestmark = pytest.mark.slow

CASES = {
    "langevin": dict(
        target="results/double_well/md/300K.nc", script=".md.py", log="results/double_well/logs/md_300K.log",
        state="state.npz", compare=("positions", "energy", "walker", "time"),
        change={"systems": {"double_well": {"md": {"walkers": 256, "steps": 120000, "equilibration_steps": 1000}}}}),
    "replica_exchange": dict(
        target="results/alanine_dipeptide/md/replica_exchange_run1.nc", script=".replica_exchange.py",
        log="results/alanine_dipeptide/logs/replica_exchange_run1.log", state=None,
        compare=("positions", "energy", "replica", "time", "acceptance"),
        # A named platform: with auto, a timing could pick another one for the rerun.
        change={"systems": {"alanine_dipeptide": {"md": {
            "steps_per_exchange": 200, "exchanges": 150, "equilibration_exchanges": 10, "platform": "Reference"}}}}),
}


def _workflow(path, change):
    workdir = copy_workflow(path)
    (workdir / "kill.yaml").write_text(yaml.safe_dump(change))
    return workdir


def _script(process: psutil.Process, suffix: str) -> psutil.Process | None:
    for child in process.children(recursive=True):
        try:
            if any(part.endswith(suffix) for part in child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def _checkpoint_has_frames(path) -> bool:
    try:
        with np.load(path) as saved:
            return int(saved["frames"]) > 0
    except (OSError, ValueError, KeyError, EOFError):
        return False  # not there yet, or being replaced right now


@pytest.mark.parametrize("case", CASES)
def test_killed_md_job_resumes_and_matches_an_uninterrupted_run(tmp_path, case):
    target, change = CASES[case]["target"], CASES[case]["change"]
    killed = _workflow(tmp_path / "killed", change)
    command = [sys.executable, "-m", "snakemake", "--cores", "1", target,
               "--configfile", "config/test.yaml", "kill.yaml"]
    run = subprocess.Popen(command, cwd=killed, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoint = killed / f"{target}.checkpoint"
    state = checkpoint / CASES[case]["state"] if CASES[case]["state"] else checkpoint
    deadline = time.monotonic() + 300
    # Kill once the checkpoint covers some production frames (not just the equilibration).
    while time.monotonic() < deadline and not _checkpoint_has_frames(state):
        assert run.poll() is None, run.stdout.read()
        time.sleep(0.05)
    script = _script(psutil.Process(run.pid), CASES[case]["script"])
    assert script is not None, "the MD job's process was not found"
    script.send_signal(signal.SIGKILL)
    output, _ = run.communicate(timeout=120)
    assert run.returncode != 0, output
    assert not (killed / target).exists()
    assert state.exists()

    rerun = snakemake(killed, "--cores", "1", target, "--configfile", "config/test.yaml", "kill.yaml")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    log = (killed / CASES[case]["log"]).read_text()
    assert "resum" in log
    assert not checkpoint.exists()

    clean = _workflow(tmp_path / "clean", change)
    result = snakemake(clean, "--cores", "1", target, "--configfile", "config/test.yaml", "kill.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = xr.open_dataset(killed / target)
    uninterrupted = xr.open_dataset(clean / target)
    for name in CASES[case]["compare"]:
        np.testing.assert_array_equal(resumed[name].values, uninterrupted[name].values)
