"""Shared start of every workflow script: log redirection and access to the boltzflow package.

Imported first, before any heavy import, so that import errors land in the rule's log.
"""

import logging
import sys
from pathlib import Path

#: What pymbar logs on import in every job, not about this run: the JAX advertisement and the generic
#: caution of its timeseries module (stated once in the README instead).
PYMBAR_BANNERS = ("JAX NOT FOUND", "Warning on use of the timeseries module")


def start(snakemake):
    """Send stdout and stderr to the rule's log and make ``src/boltzflow`` importable.

    The package is imported from this workflow's own ``src/`` (ahead of any installed copy), so a
    conda env built from envs/*.yaml needs only the dependencies, and code and results never diverge.
    """
    log = open(snakemake.log[0], "w", buffering=1)
    sys.stdout = sys.stderr = log
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
    sys.excepthook = _one_line_physics_errors
    for name in ("pymbar.mbar_solvers", "pymbar.timeseries"):
        logging.getLogger(name).addFilter(_drop_pymbar_banners)
    return lambda message: print(message, file=log, flush=True)


def _one_line_physics_errors(kind, error, traceback):
    """A :class:`boltzflow.physics_errors.PhysicsError` (or ``InputFileError``) ends the log with its one
    line, no traceback, and goes to the job's own stderr too, so that Snakemake's error output shows it;
    anything else is a bug and keeps its traceback."""
    from boltzflow.physics_errors import InputFileError, PhysicsError

    if not isinstance(error, (PhysicsError, InputFileError)):
        sys.__excepthook__(kind, error, traceback)
        return
    line = f"boltzflow: {error}"
    print(line, file=sys.stderr, flush=True)
    print(line, file=sys.__stderr__, flush=True)


def _drop_pymbar_banners(record: logging.LogRecord) -> bool:
    return not any(banner in str(record.msg) for banner in PYMBAR_BANNERS)
