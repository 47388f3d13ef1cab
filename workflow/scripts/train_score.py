"""Rule train_score: fit a score model to the target-temperature MD samples by denoising score matching."""

from _bootstrap import start

log = start(snakemake)  # noqa: F821

import torch  # noqa: E402

from boltzflow.io import read_netcdf, write_netcdf  # noqa: E402
from boltzflow.score_stages import fit_score, save_score, score_curves_dataset  # noqa: E402
from boltzflow.systems import system_from_config  # noqa: E402

torch.set_num_threads(snakemake.threads)  # noqa: F821
params = {"system": snakemake.params.system, "score": snakemake.params.score}  # noqa: F821
system = system_from_config(snakemake.wildcards.system, params["system"])  # noqa: F821
model, curves = fit_score(system, read_netcdf(snakemake.input.md), params["score"], log=log)  # noqa: F821
save_score(model, snakemake.output.model)  # noqa: F821
write_netcdf(score_curves_dataset(curves), snakemake.output.curves, config=params)  # noqa: F821
