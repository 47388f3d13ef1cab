"""Rules train_flow and train_flow_ladder: fit a flow to the target-temperature MD samples (a Boltzmann generator
for molecules); with a ``ladder`` input, a temperature-conditioned flow to the MD of every temperature; with an
``annealing`` input (flow.anneal_steps > 0), a flow annealed from the hottest temperature's MD down the ladder."""

from _bootstrap import start

log = start(snakemake)

import torch

from boltzflow.io import read_netcdf, write_netcdf
from boltzflow.settings import FlowSettings, from_block
from boltzflow.stages.flow import curves_dataset, fit_flow, save_flow
from boltzflow.systems import system_from_config

torch.set_num_threads(snakemake.threads)
params = {"system": snakemake.params.system, "flow": snakemake.params.flow}
system = system_from_config(snakemake.wildcards.system, params["system"])
# A killed job leaves its checkpoint beside the output; the rerun resumes from it.
checkpoint = f"{snakemake.output.model}.checkpoint"
ladder = [read_netcdf(path) for path in snakemake.input.get("ladder", [])]
annealing = [read_netcdf(path) for path in snakemake.input.get("annealing", [])]
model, curves = fit_flow(system, read_netcdf(snakemake.input.md), from_block(FlowSettings, params["flow"]), log=log,
                         checkpoint_path=checkpoint, energy_workers=snakemake.threads, ladder_md=ladder or None,
                         annealing_md=annealing or None)
save_flow(model, snakemake.output.model)
write_netcdf(curves_dataset(curves), snakemake.output.curves, config=params)
