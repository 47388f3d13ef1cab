"""Rule replica_state: one temperature of the replica exchange runs, pooled → MD samples (netCDF) and an AMBER trajectory."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf, write_netcdf
from boltzflow.replica_exchange import write_amber_netcdf
from boltzflow.stages.md import replica_state_stage
from boltzflow.systems import system_from_config

params = snakemake.params.system
system = system_from_config(snakemake.wildcards.system, params)
temperature = float(snakemake.wildcards.temperature)
runs = [read_netcdf(path) for path in snakemake.input.replicas]
dataset = replica_state_stage(system, runs, temperature, log=log)
write_amber_netcdf(snakemake.output.trajectory, dataset["positions"].values, system.load_molecule().topology,
                   dataset["time"].values)
write_netcdf(dataset, snakemake.output.samples, config=params)
