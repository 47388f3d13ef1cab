"""Shared start of every workflow script: log redirection and access to the boltzflow package.

Imported first, before any heavy import, so that import errors land in the rule's log.
"""

import sys
from pathlib import Path


def start(snakemake):
    """Send stdout and stderr to the rule's log and make ``src/boltzflow`` importable.

    The package is imported from this workflow's own ``src/`` (ahead of any installed copy), so a
    conda env built from envs/*.yaml needs only the dependencies, and code and results never diverge.
    """
    log = open(snakemake.log[0], "w", buffering=1)
    sys.stdout = sys.stderr = log
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
    return lambda message: print(message, file=log, flush=True)
