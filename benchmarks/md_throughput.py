"""MD stage throughput against raw OpenMM integration of the same walkers, measured side by side.

    python benchmarks/md_throughput.py [--system mueller_brown] [--walkers 512] [--steps N] [--repeats 3]

"raw" is ``integrator.step(n)`` on a Context built exactly as the stage builds it; "stage" is the whole MD
stage as the md rule runs it (equilibration, reporting every ``report_interval`` steps, checkpoints every
tenth of the run, energies, decorrelation, dataset).
Runs alternate so that machine noise hits both alike; the ratio of medians is printed (goal ≥ 0.9).
"""

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from boltzflow.config import load_schema, validate_config
from boltzflow.md import LangevinSettings, integrator_seed, make_simulation
from boltzflow.stages import md_stage
from boltzflow.systems import toy_system_from_config

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="mueller_brown")
    parser.add_argument("--walkers", type=int, default=512)
    parser.add_argument("--steps", type=int, default=None, help="production steps (default: the config's)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    config = validate_config(yaml.safe_load((ROOT / "config/config.yaml").read_text()),
                             load_schema(ROOT / "config/schema.yaml"))
    system_config = copy.deepcopy(config["systems"][args.system])
    md = {**system_config["md"], "walkers": args.walkers, "steps": args.steps or system_config["md"]["steps"]}
    settings = LangevinSettings.from_config(md)
    system = toy_system_from_config(args.system, system_config)
    temperature = system.target_temperature_k
    total_steps = settings.equilibration_steps + settings.steps

    raw, stage = [], []
    for _ in range(args.repeats):
        context, integrator = make_simulation(system, temperature, settings,
                                              integrator_seed(settings.seed, temperature))
        start = time.perf_counter()
        integrator.step(total_steps)
        raw.append(time.perf_counter() - start)
        del context, integrator
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as scratch:
            md_stage(system, temperature, settings, log=lambda _: None,
                     checkpoint_path=Path(scratch) / "md.checkpoint")
        stage.append(time.perf_counter() - start)

    particle_steps = settings.walkers * total_steps
    raw_rate = particle_steps / statistics.median(raw)
    stage_rate = particle_steps / statistics.median(stage)
    print(f"system {args.system}, {settings.walkers} walkers x {total_steps} steps, platform {settings.platform}, "
          f"report every {settings.report_interval} steps, {args.repeats} alternating repeats (median)")
    print(f"{'':<8}{'seconds':>10}{'particle-steps/s':>20}")
    print(f"{'raw':<8}{statistics.median(raw):>10.2f}{raw_rate:>20,.0f}")
    print(f"{'stage':<8}{statistics.median(stage):>10.2f}{stage_rate:>20,.0f}")
    print(f"ratio stage / raw = {stage_rate / raw_rate:.3f}  (goal >= 0.9)")


if __name__ == "__main__":
    main()
