"""Rule sample_score: probability-flow ODE samples of the score model, log q by one estimator."""

from _bootstrap import start

log = start(snakemake)

import torch

from boltzflow.io import write_netcdf
from boltzflow.settings import ScoreSamplingSettings, from_block
from boltzflow.stages.score import load_score, sample_score_stage
from boltzflow.systems import system_from_config

torch.set_num_threads(snakemake.threads)
params = {"system": snakemake.params.system, "sampling": snakemake.params.sampling}
system = system_from_config(snakemake.wildcards.system, params["system"])
dataset = sample_score_stage(system, load_score(snakemake.input.model),
                             from_block(ScoreSamplingSettings, params["sampling"]), snakemake.wildcards.likelihood,
                             log=log, energy_workers=snakemake.threads)
write_netcdf(dataset, snakemake.output.samples, config=params)
