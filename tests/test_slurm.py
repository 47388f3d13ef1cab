"""One tiny job through a real SLURM cluster with the user-facing profile profiles/slurm.

Skipped unless a cluster answers (sinfo on PATH, an idle node); CI starts a one-node cluster on
localhost with .ci/slurm/start.sh (and stops it with .ci/slurm/stop.sh).
"""

import re
import shutil
import subprocess

import pytest
import yaml

from workflow_helpers import copy_workflow, snakemake

TARGET = "results/double_well/md/300K.nc"
# A tiny MD run: the point is the trip through sbatch, not the physics.
TINY = {"systems": {"double_well": {"md": {"walkers": 16, "steps": 2000, "equilibration_steps": 200}}}}


def idle_slurm_node() -> bool:
    """True when sinfo answers within a few seconds and lists a node that can take a job now."""
    if shutil.which("sinfo") is None:
        return False
    try:
        result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=5)
    except (subprocess.TimeoutExpired, OSError):
        return False
    states = result.stdout.split()
    return result.returncode == 0 and any(state in ("idle", "mixed") for state in states)


@pytest.fixture(scope="module")
def slurm_cluster():
    if not idle_slurm_node():
        pytest.skip("no SLURM cluster running: sinfo not found / no idle node")


def test_job_runs_through_slurm(slurm_cluster, tmp_path):
    workdir = copy_workflow(tmp_path / "workflow")
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    # Targets before --configfile: it takes every following word as a config file.
    result = snakemake(workdir, TARGET, "--workflow-profile", "profiles/slurm", "--jobs", "1",
                       "--configfile", "config/test.yaml", "tiny.yaml", timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert (workdir / TARGET).stat().st_size > 0
    # The plugin logs the SLURM job id of each submission, e.g. "... submitted with SLURM jobid 7 ...".
    job_ids = re.findall(r"SLURM jobid (\d+)", log)
    assert job_ids, log[-6000:]
