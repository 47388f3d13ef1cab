"""Rule sample_score: probability-flow ODE samples of the score model, log q by one estimator."""

from _bootstrap import start

log = start(snakemake)  # noqa: F821

import torch  # noqa: E402

from boltzflow.io import write_netcdf  # noqa: E402
from boltzflow.score_stages import load_score, sample_score_stage  # noqa: E402
from boltzflow.systems import system_from_config  # noqa: E402

torch.set_num_threads(snakemake.threads)  # noqa: F821
params = {"system": snakemake.params.system, "sampling": snakemake.params.sampling}  # noqa: F821
system = system_from_config(snakemake.wildcards.system, params["system"])  # noqa: F821
dataset = sample_score_stage(system, load_score(snakemake.input.model), params["sampling"],  # noqa: F821
                             snakemake.wildcards.likelihood, log=log, energy_workers=snakemake.threads)  # noqa: F821
write_netcdf(dataset, snakemake.output.samples, config=params)  # noqa: F821
