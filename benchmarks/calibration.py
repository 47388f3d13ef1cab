"""Calibration of every estimator's error bars: R independent seeds of a small toy pipeline against quadrature.

    python benchmarks/calibration.py [--seeds 20] [--cores 2] [--systems double_well mueller_brown]
                                     [--workdir DIR] [--smoke]

Each seed r is one end-to-end run of the workflow (``snakemake --cores N -- results/{system}/summary.nc``)
in its own scratch copy under ``--workdir``, with a config override in which every seed differs (MD,
flow training and sampling, score training and sampling, SMC, MCMC, bootstrap). The toys' reference is
the exact answer by quadrature, so ``z_score`` = (ΔF − exact) / √(σ² + σ_exact²) of each (run, state)
tests the error bar itself. Printed per estimator, over every run and non-reference state:

- ``n``: estimates, ``reliable``: how many the summary marks reliable;
- ``within 2σ``: the fraction of the reliable ones with |z| ≤ 2. Goal 0.9–0.98 (an honest σ gives about
  0.95): below, the errors are too small (confidently wrong); above, too large (too high is also wrong);
- ``unrel. wrong``: the fraction of the unreliable ones with |z| > 2, i.e. how often the verdict
  "unreliable" caught an estimate that would have been wrong;
- the median |z| (about 0.67 for a calibrated σ) and the median σ of the reliable estimates, and the
  median signed z (a systematic sign means a bias, not noise).

The ``_raw`` companions (the models without weights) are listed apart: they are biased by construction.
Runs are kept under ``--workdir``, so a rerun with the same directory resumes (finished seeds cost one
Snakemake no-op). ``--smoke`` uses the tiniest sizes (for CI: 2 seeds in ≤ 3 min on 2 cores); it exits
non-zero if a run fails or a summary lacks a variable, never on the fractions, which 2 seeds cannot judge.
"""

import argparse
import copy
import importlib.util
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr
import yaml

ROOT = Path(__file__).resolve().parents[1]

REQUIRED = ["reliable", "delta_f", "delta_f_err", "reference_delta_f", "reference_delta_f_err", "z_score"]
REFERENCE = "quadrature"
GOAL = (0.90, 0.98)

# Sizes per config block, shared by the toys (merged over config/config.yaml's system block).
SMALL = {
    "md": {"walkers": 256, "steps": 40000, "equilibration_steps": 5000},
    "flow": {"n_layers": 4, "hidden": 32, "steps": 300},
    "sampling": {"n_samples": 10000},
    "analysis": {"bins": 30, "bootstrap": 50, "divergence_repeats": 2},
    "score": {"hidden": 64, "steps": 400},
    "score_sampling": {"n_samples": 2000, "integrator_check_samples": 128},
    "smc": {"n_particles": 200, "replicates": 4},
    "mcmc": {"chains": 50},
}
SMOKE = {
    "md": {"walkers": 128, "steps": 10000, "equilibration_steps": 1000},
    "flow": {"n_layers": 2, "hidden": 16, "steps": 100},
    "sampling": {"n_samples": 2000},
    "analysis": {"bins": 20, "bootstrap": 10, "divergence_repeats": 1},
    "score": {"hidden": 32, "n_hidden_layers": 1, "steps": 100},
    "score_sampling": {"n_samples": 400, "ode_steps": 10, "integrator_check_samples": 32},
    # 2 x 150 particles: PSIS k̂ of a state needs ≥ 25 weights in it (arviz-stats' tail of ≥ 5).
    "smc": {"n_particles": 150, "replicates": 2, "max_levels": 20, "moves_per_level": 2},
    "mcmc": {"chains": 20},
}
SEEDED = ["md", "flow", "sampling", "score", "score_sampling", "smc", "mcmc", "analysis"]


def seed_config(systems: list[str], sizes: dict, seed: int) -> dict:
    """The override file of one run: the sizes, and ``seed`` in every seeded block (md.seed must be > 0)."""
    blocks = copy.deepcopy(sizes)
    for block in SEEDED:
        blocks.setdefault(block, {})["seed"] = seed
    return {"run": list(systems), "systems": {system: copy.deepcopy(blocks) for system in systems}}


def copy_workflow(destination: Path) -> Path:
    """The scratch copy the end-to-end tests run in (tests/workflow_helpers.py), made from this checkout."""
    spec = importlib.util.spec_from_file_location("workflow_helpers", ROOT / "tests" / "workflow_helpers.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    return helpers.copy_workflow(destination)


def run_seed(directory: Path, systems: list[str], sizes: dict, seed: int, cores: int) -> tuple[bool, str]:
    """Run (or resume) one seed's workflow copy; True when Snakemake succeeded, and the log's path."""
    if not (directory / "Snakefile").exists():
        copy_workflow(directory)
    (directory / "calibration.yaml").write_text(yaml.safe_dump(seed_config(systems, sizes, seed), sort_keys=False))
    targets = [f"results/{system}/summary.nc" for system in systems]
    log = directory / "calibration.log"
    with log.open("w") as handle:
        done = subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(cores), "--configfile",
                               "calibration.yaml", "--", *targets], cwd=directory, stdout=handle,
                              stderr=subprocess.STDOUT)
    return done.returncode == 0, str(log)


def read_summary(path: Path) -> tuple[xr.Dataset | None, list[str]]:
    """The summary's variables this benchmark needs, or None and what is missing."""
    if not path.exists():
        return None, [f"{path} does not exist"]
    with xr.open_dataset(path) as summary:
        missing = [name for name in REQUIRED if name not in summary]
        if missing:
            return None, [f"{path} lacks {', '.join(missing)}"]
        return summary[REQUIRED].load(), []


def collect(summaries: list[xr.Dataset]) -> dict[str, dict[str, list]]:
    """Per estimator: reliable flags, z-scores and σ over every (run, non-reference state)."""
    rows: dict[str, dict[str, list]] = {}
    for summary in summaries:
        states = [str(s) for s in summary["state"].values[1:]]  # the first state is ΔF's reference
        for estimator in [str(e) for e in summary["estimator"].values]:
            if estimator == REFERENCE:
                continue
            row = rows.setdefault(estimator, {"reliable": [], "z": [], "sigma": []})
            for state in states:
                values = summary.sel(estimator=estimator, state=state)
                row["reliable"].append(bool(values["reliable"]))
                row["z"].append(float(values["z_score"]))
                row["sigma"].append(float(values["delta_f_err"]))
    return rows


def row_statistics(row: dict[str, list], medians_over_all: bool = False) -> dict[str, float]:
    """Counts and fractions of one estimator; the medians over its reliable estimates (or over all)."""
    reliable = np.array(row["reliable"], dtype=bool)
    z = np.array(row["z"], dtype=float)
    sigma = np.array(row["sigma"], dtype=float)
    good, bad = z[reliable], z[~reliable]
    chosen = np.ones_like(reliable) if medians_over_all else reliable
    return {
        "n": len(z), "reliable": int(reliable.sum()),
        # A non-finite z (no estimate) counts as outside 2σ.
        "within": _mean(np.abs(good) <= 2), "unreliable_wrong": _mean(~(np.abs(bad) <= 2)),
        "median_abs_z": _median(np.abs(z[chosen])), "median_z": _median(z[chosen]),
        "median_sigma": _median(sigma[chosen]),
    }


def _mean(flags: np.ndarray) -> float:
    return float(np.mean(flags)) if flags.size else math.nan


def _median(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else math.nan


def print_table(rows: dict[str, dict[str, list]]) -> list[str]:
    """Print the table; return the estimators whose within-2σ fraction meets the goal."""
    def fmt(value, spec):
        width = int(spec.lstrip("+").split(".")[0])
        return "–".rjust(width) if isinstance(value, float) and math.isnan(value) else format(value, spec)

    header = (f"{'estimator':30s} {'n':>4s} {'reliable':>8s} {'within 2σ':>9s} {'unrel. wrong':>12s} "
              f"{'med |z|':>7s} {'med z':>6s} {'med σ (kT)':>10s}")
    meeting = []
    raw = [name for name in rows if name.endswith("_raw")]
    for title, names in [("estimators (goal: within 2σ in 0.90–0.98 of the reliable ones; medians over those)",
                          [name for name in rows if name not in raw]),
                         ("biased by construction (the models without weights; medians over all)", raw)]:
        if not names:
            continue
        print(f"\n{title}\n{header}")
        for name in names:
            s = row_statistics(rows[name], medians_over_all=name in raw)
            print(f"{name:30s} {s['n']:4d} {s['reliable']:8d} {fmt(s['within'], '9.2f')} "
                  f"{fmt(s['unreliable_wrong'], '12.2f')} {fmt(s['median_abs_z'], '7.2f')} "
                  f"{fmt(s['median_z'], '+6.2f')} {fmt(s['median_sigma'], '10.3f')}")
            if name not in raw and GOAL[0] <= s["within"] <= GOAL[1]:
                meeting.append(name)
    return meeting


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="independent runs R")
    parser.add_argument("--cores", type=int, default=2, help="Snakemake --cores of each run")
    parser.add_argument("--systems", nargs="+", default=["double_well"], help="toy systems (2D, with quadrature)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the runs live (default: a new temporary directory); reuse it to resume")
    parser.add_argument("--first-seed", type=int, default=101, help="seed of run 1 (run r gets first_seed + r - 1)")
    parser.add_argument("--smoke", action="store_true", help="tiniest sizes, for CI")
    args = parser.parse_args()

    sizes = SMOKE if args.smoke else SMALL
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="boltzflow_calibration_"))
    workdir.mkdir(parents=True, exist_ok=True)
    seeds = [args.first_seed + r for r in range(args.seeds)]
    print(f"calibration: {len(seeds)} seeds of {', '.join(args.systems)} ({'smoke' if args.smoke else 'small'} "
          f"sizes), {args.cores} cores per run, runs under {workdir}")
    print(f"seeds (every seeded block: {', '.join(SEEDED)}): {seeds[0]}..{seeds[-1]}")
    print("sizes, merged over config/config.yaml for each system:")
    for block, values in sizes.items():
        print(f"  {block}: " + ", ".join(f"{key}={value}" for key, value in values.items()))

    summaries, failures, times = [], [], []
    start = time.perf_counter()
    for index, seed in enumerate(seeds):
        directory = workdir / f"seed_{seed}"
        eta = ""
        if times:
            eta = f", ETA {np.mean(times) * (len(seeds) - index) / 60:.1f} min"
        print(f"[{index + 1}/{len(seeds)}] seed {seed} in {directory}{eta} ...", end="", flush=True)
        began = time.perf_counter()
        ok, log = run_seed(directory, args.systems, sizes, seed, args.cores)
        elapsed = time.perf_counter() - began
        times.append(elapsed)
        if not ok:
            print(f" FAILED after {elapsed:.0f} s (log: {log})", flush=True)
            failures.append(f"seed {seed}: snakemake failed, see {log}")
            continue
        problems = []
        for system in args.systems:
            summary, missing = read_summary(directory / "results" / system / "summary.nc")
            problems += missing
            if summary is not None:
                summaries.append(summary.assign_attrs(system=system, seed=seed))
        failures += [f"seed {seed}: {problem}" for problem in problems]
        print(f" {'done' if not problems else 'INCOMPLETE'} in {elapsed:.0f} s", flush=True)
    print(f"all runs: {(time.perf_counter() - start) / 60:.1f} min wall, "
          f"median {np.median(times):.0f} s per seed")

    if summaries:
        rows = collect(summaries)
        print(f"\nΔF of every non-reference state against quadrature (the exact answer), {len(summaries)} "
              f"summaries ({len(seeds)} seeds × {', '.join(args.systems)}); |z| ≤ 2 counts as within 2σ")
        meeting = print_table(rows)
        print(f"\nmeet the goal (within 2σ in {GOAL[0]:.2f}–{GOAL[1]:.2f} of the reliable estimates): "
              f"{', '.join(meeting) if meeting else 'none'}")
        if args.smoke or len(seeds) < 8:
            print(f"({len(seeds)} seeds cannot judge these fractions; the smoke run checks that the pipeline runs)")
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures or not summaries else 0


if __name__ == "__main__":
    sys.exit(main())
