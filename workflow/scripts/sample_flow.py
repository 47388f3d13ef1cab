"""Rule sample_flow: draw samples from the trained flow with ln q and the reduced energy u."""

from _bootstrap import start

log = start(snakemake)

import torch

from boltzflow.io import write_netcdf
from boltzflow.settings import SamplingSettings, from_block
from boltzflow.stages.flow import load_flow, sample_flow_stage
from boltzflow.systems import system_from_config

torch.set_num_threads(snakemake.threads)
params = {"system": snakemake.params.system, "sampling": snakemake.params.sampling}
system = system_from_config(snakemake.wildcards.system, params["system"])
dataset = sample_flow_stage(system, load_flow(snakemake.input.model), from_block(SamplingSettings, params["sampling"]),
                            log=log, energy_workers=snakemake.threads)
write_netcdf(dataset, snakemake.output.samples, config=params)
