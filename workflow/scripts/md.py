"""Rule md: Langevin MD of one system at one temperature → decorrelated samples (netCDF)."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import write_netcdf
from boltzflow.stages.md import md_stage
from boltzflow.systems import system_from_config

params = snakemake.params.system
system = system_from_config(snakemake.wildcards.system, params)
# A killed job leaves its checkpoint beside the output; the rerun resumes from it.
checkpoint = f"{snakemake.output.samples}.checkpoint"
dataset = md_stage(system, params["temperatures"][0], system.md_settings(params["md"]), log=log,
                   checkpoint_path=checkpoint)
write_netcdf(dataset, snakemake.output.samples, config=params)
