"""Rule flow_mcmc: independence Metropolis-Hastings with the flow's samples as proposals."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf, write_netcdf
from boltzflow.settings import MCMCSettings, from_block
from boltzflow.stages.samplers import mcmc_stage
from boltzflow.systems import system_from_config

params = {"system": snakemake.params.system, "mcmc": snakemake.params.mcmc}
system = system_from_config(snakemake.wildcards.system, params["system"])
dataset = mcmc_stage(system, read_netcdf(snakemake.input.samples), from_block(MCMCSettings, params["mcmc"]), log=log)
write_netcdf(dataset, snakemake.output.samples, config=params)
