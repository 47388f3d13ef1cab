"""Snakemake benchmark files (``results/{system}/benchmarks/*.tsv``): the CPU cost of the jobs behind a result.

Light on purpose (pandas only), so that the figure rules can read costs without the analysis stack.
"""

from __future__ import annotations

import numpy as np


def cpu_seconds(paths) -> float:
    """Sum of CPU seconds over Snakemake benchmark files (falls back to wall seconds if CPU is missing)."""
    import pandas as pd

    total = 0.0
    for path in paths:
        row = pd.read_csv(path, sep="\t").iloc[-1]
        cpu = float(row.get("cpu_time", np.nan))
        total += cpu if np.isfinite(cpu) and cpu > 0 else float(row["s"])
    return total


def training_md_seconds(names, target_seconds: float, ladder_seconds: float, annealing: bool) -> dict[str, float]:
    """Per estimator name, the CPU seconds of the MD its model trains on: every ladder temperature's MD
    (``ladder_seconds``) for a model that learns the whole ladder, the target temperature's otherwise."""
    from boltzflow.estimator_table import learns_the_ladder

    return {name: ladder_seconds if learns_the_ladder(name, annealing) else target_seconds for name in names}
