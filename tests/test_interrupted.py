"""A killed MD job resumes from its checkpoint and ends exactly where an uninterrupted run ends."""

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

TARGET = "results/double_well/md/300K.nc"
CHANGE = {"systems": {"double_well": {"md": {"walkers": 256, "steps": 120000, "equilibration_steps": 1000}}}}


def _workflow(path):
    workdir = copy_workflow(path)
    (workdir / "kill.yaml").write_text(yaml.safe_dump(CHANGE))
    return workdir


def _md_script(process: psutil.Process) -> psutil.Process | None:
    for child in process.children(recursive=True):
        try:
            if any(part.endswith(".md.py") for part in child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_killed_md_job_resumes_and_matches_an_uninterrupted_run(tmp_path):
    killed = _workflow(tmp_path / "killed")
    command = [sys.executable, "-m", "snakemake", "--cores", "1", TARGET,
               "--configfile", "config/test.yaml", "kill.yaml"]
    run = subprocess.Popen(command, cwd=killed, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = killed / f"{TARGET}.checkpoint" / "state.npz"
    deadline = time.monotonic() + 300
    # Kill once the checkpoint covers some production frames (not just the equilibration).
    while time.monotonic() < deadline:
        if state.exists():
            try:
                with np.load(state) as saved:
                    if int(saved["frames"]) > 0:
                        break
            except (OSError, ValueError, KeyError):
                pass  # being replaced right now
        assert run.poll() is None, run.stdout.read()
        time.sleep(0.05)
    script = _md_script(psutil.Process(run.pid))
    assert script is not None, "the MD job's process was not found"
    script.send_signal(signal.SIGKILL)
    output, _ = run.communicate(timeout=120)
    assert run.returncode != 0, output
    assert not (killed / TARGET).exists()
    assert state.exists()

    rerun = snakemake(killed, "--cores", "1", TARGET, "--configfile", "config/test.yaml", "kill.yaml")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    log = (killed / "results/double_well/logs/md_300K.log").read_text()
    assert "resuming from checkpoint" in log
    assert not (killed / f"{TARGET}.checkpoint").exists()

    clean = _workflow(tmp_path / "clean")
    result = snakemake(clean, "--cores", "1", TARGET, "--configfile", "config/test.yaml", "kill.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = xr.open_dataset(killed / TARGET)
    uninterrupted = xr.open_dataset(clean / TARGET)
    for name in ("positions", "energy", "walker", "time"):
        np.testing.assert_array_equal(resumed[name].values, uninterrupted[name].values)
