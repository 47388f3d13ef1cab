"""Rule replica_exchange: one independent temperature replica exchange run of a molecule → every recorded frame (netCDF)."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import write_netcdf
from boltzflow.stages.md import replica_exchange_stage
from boltzflow.systems import system_from_config

params = snakemake.params.system
system = system_from_config(snakemake.wildcards.system, params)
# A killed job leaves its checkpoint beside the output; the rerun resumes from it.
checkpoint = f"{snakemake.output.replicas}.checkpoint"
dataset = replica_exchange_stage(system, system.md_settings(params["md"]), log=log, checkpoint_path=checkpoint,
                                 threads=snakemake.threads, run=int(snakemake.wildcards.run))
write_netcdf(dataset, snakemake.output.replicas, config=params)
