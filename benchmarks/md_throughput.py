"""MD stage throughput against raw OpenMM integration of the same system, measured side by side.

    python benchmarks/md_throughput.py [--system mueller_brown] [--walkers 512] [--steps N] [--repeats 3]
    python benchmarks/md_throughput.py --system alanine_dipeptide [--exchanges 300] [--repeats 3]

Toy systems: "raw" is ``integrator.step(n)`` on a Context built exactly as the stage builds it; "stage" is
the whole MD stage as the md rule runs it (equilibration, reporting every ``report_interval`` steps,
checkpoints every tenth of the run, energies, decorrelation, dataset).
Molecules: "raw" is ``integrator.step(n)`` on one Context per temperature of the ladder, on the platform the
stage picks, for as many steps as the replica exchange integrates; "stage" is the replica exchange stage as
the replica_exchange rule runs it (platform choice, minimization, swaps, recording, checkpoints, dataset).
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
from boltzflow.md import integrator_seed, make_simulation
from boltzflow.settings import LangevinSettings
from boltzflow.stages.md import md_stage
from boltzflow.systems import toy_system_from_config

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="mueller_brown")
    parser.add_argument("--walkers", type=int, default=512)
    parser.add_argument("--steps", type=int, default=None, help="production steps (default: the config's)")
    parser.add_argument("--exchanges", type=int, default=300, help="molecules: production exchanges")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    config = validate_config(yaml.safe_load((ROOT / "config/config.yaml").read_text()),
                             load_schema(ROOT / "config/schema.yaml"))
    system_config = copy.deepcopy(config["systems"][args.system])
    if system_config["type"] == "molecule":
        system_config["pdb"] = str(ROOT / system_config["pdb"])
        return molecule_throughput(args, system_config)
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


def molecule_throughput(args, system_config):
    import openmm
    from openmm import unit

    from boltzflow.molecules import select_platform
    from boltzflow.stages.md import replica_exchange_stage
    from boltzflow.systems import system_from_config

    md = {**system_config["md"], "exchanges": args.exchanges}
    system = system_from_config(args.system, system_config)
    molecule = system.load_molecule()
    platform = select_platform(md["platform"], molecule, log=lambda _: None)
    steps = (md["equilibration_exchanges"] + md["exchanges"]) * md["steps_per_exchange"]
    n_states = len(system.temperatures_k)

    raw, stage = [], []
    for _ in range(args.repeats):
        contexts = []
        for temperature in system.temperatures_k:
            integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, md["friction_per_ps"] / unit.picosecond,
                                                         md["timestep_fs"] * unit.femtosecond)
            context = openmm.Context(molecule.system, integrator, openmm.Platform.getPlatformByName(platform))
            context.setPositions(molecule.positions_nm)
            openmm.LocalEnergyMinimizer.minimize(context, 10.0, 1000)
            context.setVelocitiesToTemperature(temperature * unit.kelvin, md["seed"])
            contexts.append((context, integrator))
        start = time.perf_counter()
        for _, integrator in contexts:
            integrator.step(steps)
        raw.append(time.perf_counter() - start)
        del contexts
        with tempfile.TemporaryDirectory() as scratch:
            start = time.perf_counter()
            replica_exchange_stage(system, system.md_settings(md), log=lambda _: None, checkpoint_path=Path(scratch) / "re.checkpoint")
            stage.append(time.perf_counter() - start)

    ns = n_states * steps * md["timestep_fs"] * 1e-6
    raw_rate = ns / statistics.median(raw) * 86400
    stage_rate = ns / statistics.median(stage) * 86400
    print(f"system {args.system}, {n_states} replicas x {steps} steps of {md['timestep_fs']:g} fs, platform {platform}, "
          f"exchange every {md['steps_per_exchange']} steps, {args.repeats} alternating repeats (median)")
    print(f"{'':<8}{'seconds':>10}{'ns/day (all replicas)':>24}")
    print(f"{'raw':<8}{statistics.median(raw):>10.2f}{raw_rate:>24,.0f}")
    print(f"{'stage':<8}{statistics.median(stage):>10.2f}{stage_rate:>24,.0f}")
    print(f"ratio stage / raw = {stage_rate / raw_rate:.3f}  (goal >= 0.9)")


if __name__ == "__main__":
    main()
