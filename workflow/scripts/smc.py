"""Rule smc: sequential Monte Carlo from a trained model (flow or score model) to the target."""

from _bootstrap import start

log = start(snakemake)  # noqa: F821

import torch  # noqa: E402

from boltzflow.devices import select_device  # noqa: E402
from boltzflow.generators import FlowLatent  # noqa: E402
from boltzflow.io import write_netcdf  # noqa: E402
from boltzflow.score_stages import ScoreLatent, load_score, smc_stage  # noqa: E402
from boltzflow.stages import load_flow  # noqa: E402
from boltzflow.systems import system_from_config  # noqa: E402

torch.set_num_threads(snakemake.threads)  # noqa: F821
params = {"system": snakemake.params.system, "smc": snakemake.params.smc}  # noqa: F821
system = system_from_config(snakemake.wildcards.system, params["system"])  # noqa: F821
device = select_device(params["smc"]["device"], log=log)
if snakemake.wildcards.generative == "score":  # noqa: F821
    model = load_score(snakemake.input.model).double().to(device)  # noqa: F821
    latent_model = ScoreLatent(model, params["smc"]["likelihood"], params["smc"]["ode_steps"], params["smc"]["probes"])
else:
    latent_model = FlowLatent(load_flow(snakemake.input.model).to(device))  # noqa: F821
dataset = smc_stage(system, latent_model, params["smc"], log=log, energy_workers=snakemake.threads)  # noqa: F821
write_netcdf(dataset, snakemake.output.samples, config=params)  # noqa: F821
