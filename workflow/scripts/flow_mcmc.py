"""Rule flow_mcmc: independence Metropolis-Hastings with the flow's samples as proposals."""

from _bootstrap import start

log = start(snakemake)  # noqa: F821

from boltzflow.io import read_netcdf, write_netcdf  # noqa: E402
from boltzflow.stages import mcmc_stage  # noqa: E402
from boltzflow.systems import system_from_config  # noqa: E402

params = {"system": snakemake.params.system, "mcmc": snakemake.params.mcmc}  # noqa: F821
system = system_from_config(snakemake.wildcards.system, params["system"])  # noqa: F821
dataset = mcmc_stage(system, read_netcdf(snakemake.input.samples), params["mcmc"], log=log)  # noqa: F821
write_netcdf(dataset, snakemake.output.samples, config=params)  # noqa: F821
