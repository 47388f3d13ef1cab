"""Rule smc: sequential Monte Carlo from a trained model (flow or score model) to the target."""

from _bootstrap import start

log = start(snakemake)

import torch

from boltzflow.io import write_netcdf
from boltzflow.settings import ScoreSamplingSettings, SMCSettings, from_block
from boltzflow.stages.samplers import latent_model, smc_stage
from boltzflow.systems import system_from_config

torch.set_num_threads(snakemake.threads)
params = {"system": snakemake.params.system, "smc": snakemake.params.smc}
system = system_from_config(snakemake.wildcards.system, params["system"])
smc = from_block(SMCSettings, params["smc"]["smc"])
model_block = dict(params["smc"]["model"])
device = model_block.pop("device")
model = latent_model(snakemake.wildcards.generative, snakemake.input.model, device,
                     score_sampling=from_block(ScoreSamplingSettings, model_block),
                     likelihood=smc.score_likelihood, log=log)
dataset = smc_stage(system, model, smc, log=log, energy_workers=snakemake.threads)
write_netcdf(dataset, snakemake.output.samples, config=params)
