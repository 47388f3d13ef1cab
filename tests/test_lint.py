"""The linter configured in pyproject.toml is clean over the whole repository (scripts, package, tests)."""

import shutil
import subprocess
import sys
from pathlib import Path

from workflow_helpers import ROOT


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = subprocess.run([ruff, "check", "--output-format", "concise", str(ROOT)], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
