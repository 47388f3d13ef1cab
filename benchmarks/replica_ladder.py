"""How strong a reference each replica exchange ladder gives for alanine dipeptide, per CPU second.

    python benchmarks/replica_ladder.py [--ns 0.6] [--ladders old default ...] [--seed 1]

Each ladder runs one replica exchange (the package's own stages: ``replica_exchange_stage``,
``replica_state_stage`` and ``mbar_stage``, alanine dipeptide from ``config/config.yaml``) of ``--ns`` ns
per replica, one after the other in this process, so their CPU times compare side by side. Printed per
ladder: temperatures, swap interval, MD ns per replica, CPU seconds of the MD, the acceptance range, the
statistical inefficiency g in ps (the larger of the state series and the replica trajectories, the
slowest observable; what MBAR scales its errors by), MBAR's ΔF(φ > 0) ± its √g-scaled error, and the
figure of merit err² × CPU s (lower is better; an error falls as 1/√(MD time), so it is the CPU seconds
that buy an error of 1 kT) with the CPU minutes it projects for ± 0.15 kT.

One run per ladder is a noisy measurement of g (a 0.6 ns run holds a few dozen independent samples):
read differences of less than about 2× as ties. Measured here (2026-12-02, 0.6–1 ns per replica, one
seed): the old default (6 temperatures to 631 K, swaps every 1 ps) about 480 kT²·s; swaps every 0.1 ps
on the same ladder about 300; 6 to 792 K 180; 8 to 902 K 190; 10 to 1200 K 145 (the new default);
12 to 1500 K 550 (more replicas, and longer round trips over the ladder for each of them).
"""

import argparse
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def geometric(n: int, top_k: float, bottom_k: float = 300.0) -> list[float]:
    return [round(bottom_k * (top_k / bottom_k) ** (i / (n - 1))) for i in range(n)]


#: name → (temperatures in K, steps per exchange)
LADDERS = {
    "old": ([300, 348, 404, 469, 544, 631], 500),
    "old_fast_swaps": ([300, 348, 404, 469, 544, 631], 50),
    "8_to_900": (geometric(8, 902), 50),
    "default": (geometric(10, 1200), 50),
    "12_to_1500": (geometric(12, 1500), 50),
}


def measure(name: str, temperatures, steps_per_exchange: int, ns: float, seed: int) -> dict:
    from boltzflow.stages.mbar import mbar_stage
    from boltzflow.stages.md import replica_exchange_stage, replica_state_stage
    from boltzflow.systems import system_from_config

    block = yaml.safe_load((ROOT / "config/config.yaml").read_text())["systems"]["alanine_dipeptide"]
    block = {**block, "pdb": str(ROOT / block["pdb"]), "temperatures": [float(t) for t in temperatures]}
    md = {**block["md"], "steps_per_exchange": steps_per_exchange, "report_interval": 50, "seed": seed,
          "platform": "Reference", "equilibration_exchanges": max(1, int(0.05e6 / (2.0 * steps_per_exchange))),
          "exchanges": int(round(ns * 1e6 / (2.0 * steps_per_exchange)))}
    md.pop("runs", None)
    system = system_from_config("alanine_dipeptide", block)
    quiet = lambda _message: None  # noqa: E731
    start = time.process_time()
    run = replica_exchange_stage(system, system.md_settings(md), log=quiet)
    cpu_s = time.process_time() - start
    states = [replica_state_stage(system, [run], t, log=quiet) for t in system.temperatures_k]
    _, observables = mbar_stage(system, states, 36, log=quiet)
    g_frames = states[0].attrs["statistical_inefficiency_frames"]
    err = float(observables["delta_f_err"].values[1])
    return dict(name=name, temperatures=f"{len(temperatures)}: {temperatures[0]:g}-{temperatures[-1]:g} K",
                swap_ps=steps_per_exchange * 2e-3, ns=ns, cpu_s=cpu_s,
                acceptance=f"{run['acceptance'].values.min():.2f}-{run['acceptance'].values.max():.2f}",
                g_ps=g_frames * 50 * 2e-3, delta_f=float(observables["delta_f"].values[1]), err=err,
                merit=err ** 2 * cpu_s, minutes_for_015=err ** 2 * cpu_s / 0.15 ** 2 / 60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", type=float, default=0.6, help="MD ns per replica for each ladder")
    parser.add_argument("--ladders", nargs="+", default=list(LADDERS), choices=list(LADDERS))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    header = (f"{'ladder':<15} {'temperatures':<18} {'swap ps':>7} {'ns':>5} {'CPU s':>7} {'accept':>9} "
              f"{'g ps':>6} {'ΔF(φ>0) kT':>14} {'err²·s':>7} {'CPU min for ±0.15':>18}")
    print(header)
    print("-" * len(header))
    for name in args.ladders:
        temperatures, steps = LADDERS[name]
        row = measure(name, temperatures, steps, args.ns, args.seed)
        print(f"{row['name']:<15} {row['temperatures']:<18} {row['swap_ps']:>7.1f} {row['ns']:>5.2f} "
              f"{row['cpu_s']:>7.0f} {row['acceptance']:>9} {row['g_ps']:>6.1f} "
              f"{row['delta_f']:>6.2f} ± {row['err']:<5.2f} {row['merit']:>7.0f} {row['minutes_for_015']:>18.0f}",
              flush=True)
    print("\nΔF(φ>0): MBAR at 300 K with errors scaled by √g; err²·s = error² × MD CPU seconds (lower is better).")
    print("One seed per ladder: differences under about 2× are within the noise of g.")


if __name__ == "__main__":
    main()
