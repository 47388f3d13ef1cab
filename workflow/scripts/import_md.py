"""Rule import_md: a user's trajectory files at one temperature → MD samples (netCDF), energies recomputed."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import write_netcdf
from boltzflow.stages.md import trajectory_state_stage
from boltzflow.systems import system_from_config

params = snakemake.params.system
system = system_from_config(snakemake.wildcards.system, params)
dataset = trajectory_state_stage(system, float(snakemake.wildcards.temperature), list(snakemake.input.trajectories),
                                 log=log, workers=snakemake.threads)
write_netcdf(dataset, snakemake.output.samples, config=params)
