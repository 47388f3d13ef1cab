"""Rule sample_trajectories: a molecule's model samples → AMBER NetCDF trajectories of every sample and of a
weight-resampled ensemble (frame time = index of the sample in the samples file)."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf
from boltzflow.replica_exchange import write_amber_netcdf
from boltzflow.settings import SampleTrajectorySettings, from_block
from boltzflow.stages.trajectories import sample_trajectories_stage
from boltzflow.systems import system_from_config

params = snakemake.params.settings
system = system_from_config(snakemake.wildcards.system, params["system"])
settings = from_block(SampleTrajectorySettings, params["trajectories"])
every, resampled = sample_trajectories_stage(read_netcdf(snakemake.input.samples), settings, log=log)
topology = system.load_molecule().topology
for frames, path in [(every, snakemake.output.trajectory), (resampled, snakemake.output.resampled)]:
    write_amber_netcdf(path, frames["positions"].values, topology, frames["sample"].values)
