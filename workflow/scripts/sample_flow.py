"""Rules sample_flow and sample_flow_ladder: draw samples from the trained flow with ln q and the reduced energy u;
a temperature-conditioned flow also at every ladder temperature (output ``temperatures``)."""

from _bootstrap import start

log = start(snakemake)

import torch

from boltzflow.io import write_netcdf
from boltzflow.settings import SamplingSettings, from_block
from boltzflow.stages.flow import flow_at_temperature, load_flow, sample_flow_stage, sample_ladder_stage
from boltzflow.systems import system_from_config

torch.set_num_threads(snakemake.threads)
params = {"system": snakemake.params.system, "sampling": snakemake.params.sampling}
system = system_from_config(snakemake.wildcards.system, params["system"])
settings = from_block(SamplingSettings, params["sampling"])
model = load_flow(snakemake.input.model)
conditioned = "temperatures" in snakemake.output.keys()
target_model = flow_at_temperature(model, 1.0) if conditioned else model
dataset = sample_flow_stage(system, target_model, settings, log=log, energy_workers=snakemake.threads)
if conditioned:
    log("the ladder's temperatures:")
    ladder = sample_ladder_stage(system, model, settings, log=log, energy_workers=snakemake.threads)
    write_netcdf(ladder, snakemake.output.temperatures, config=params)
write_netcdf(dataset, snakemake.output.samples, config=params)
