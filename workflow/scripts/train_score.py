"""Rule train_score: fit a score model to the target-temperature MD samples by denoising score matching."""

from _bootstrap import start

log = start(snakemake)

import torch

from boltzflow.io import read_netcdf, write_netcdf
from boltzflow.settings import ScoreSettings, from_block
from boltzflow.stages.score import fit_score, save_score, score_curves_dataset
from boltzflow.systems import system_from_config

torch.set_num_threads(snakemake.threads)
params = {"system": snakemake.params.system, "score": snakemake.params.score}
system = system_from_config(snakemake.wildcards.system, params["system"])
# A killed job leaves its checkpoint beside the output; the rerun resumes from it.
checkpoint = f"{snakemake.output.model}.checkpoint"
model, curves = fit_score(system, read_netcdf(snakemake.input.md), from_block(ScoreSettings, params["score"]),
                          log=log, checkpoint_path=checkpoint)
save_score(model, snakemake.output.model)
write_netcdf(score_curves_dataset(curves), snakemake.output.curves, config=params)
