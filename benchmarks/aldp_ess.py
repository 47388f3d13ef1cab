"""Alanine dipeptide: ESS/N of the Boltzmann generator against training CPU-minutes.

    python benchmarks/aldp_ess.py --md results/alanine_dipeptide/md/300K.nc [--config config/config.yaml]
                                  [--steps N] [--samples 20000]

Trains the flow exactly as the train_flow rule does (the config's flow settings, on every recorded MD frame
of the target temperature, produced by the workflow), and prints after every record of the training the CPU
minutes used so far and the ESS/N of the fixed monitor samples; then the raw and trimmed ESS/N of
``--samples`` fresh samples, as the sample_flow and reweight rules compute them. One process, one thread.
"""

import argparse
import time
from pathlib import Path

import torch
import yaml

from boltzflow import estimators
from boltzflow.config import load_schema, validate_config
from boltzflow.io import read_netcdf
from boltzflow.settings import FlowSettings, SamplingSettings, from_block
from boltzflow.stages.flow import fit_flow, sample_flow_stage
from boltzflow.systems import system_from_config

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--md", required=True, help="the target-temperature MD file of a workflow run")
    parser.add_argument("--config", default=str(ROOT / "config/config.yaml"))
    parser.add_argument("--system", default="alanine_dipeptide")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    parser.add_argument("--samples", type=int, default=20000)
    args = parser.parse_args()

    torch.set_num_threads(1)
    config = validate_config(yaml.safe_load(Path(args.config).read_text()), load_schema(ROOT / "config/schema.yaml"))
    system_config = config["systems"][args.system]
    system_config["pdb"] = str(ROOT / system_config["pdb"])
    flow = {**system_config["flow"], "device": "cpu"}
    if args.steps:
        flow["steps"] = args.steps
    system = system_from_config(args.system, system_config)
    md = read_netcdf(args.md)

    cpu_at_record = []
    start = time.process_time()

    def log(message):
        if message.lstrip().startswith("step "):
            cpu_at_record.append(time.process_time() - start)

    model, curves = fit_flow(system, md, from_block(FlowSettings, flow), log=log)
    print(f"{args.system}: {md.sizes['sample']} MD frames, flow {flow['n_layers']} layers x {flow['hidden']} "
          f"hidden, {flow['steps']} steps, energy_weight {flow['energy_weight']}")
    print(f"{'step':>6}{'CPU min':>10}{'ESS/N (monitor)':>18}")
    for step, minutes, ess in zip(curves["step"], cpu_at_record, curves["ess_fraction"]):
        print(f"{step:>6}{minutes / 60:>10.2f}{ess:>18.4f}")
    sampling = {**system_config["sampling"], "n_samples": args.samples, "device": "cpu"}
    samples = sample_flow_stage(system, model, from_block(SamplingSettings, sampling), log=lambda _: None)
    log_w = samples["log_w"].values
    trimmed = estimators.trimmed_log_weights(log_w, system_config["analysis"]["trim_fraction"])
    print(f"fresh samples: {args.samples}, ESS/N raw {estimators.ess_fraction(log_w):.4f}, "
          f"trimmed {estimators.ess_fraction(trimmed):.4f}, dropped {samples.attrs['n_nonfinite']}")


if __name__ == "__main__":
    main()
