"""Rule replica_state: one temperature of a replica exchange run → MD samples (netCDF) and an AMBER trajectory."""

from _bootstrap import start

log = start(snakemake)  # noqa: F821

from boltzflow.io import read_netcdf, write_netcdf  # noqa: E402
from boltzflow.molecule_stages import load_system_molecule, replica_state_stage  # noqa: E402
from boltzflow.replica_exchange import write_amber_netcdf  # noqa: E402
from boltzflow.systems import system_from_config  # noqa: E402

params = snakemake.params.system  # noqa: F821
system = system_from_config(snakemake.wildcards.system, params)  # noqa: F821
temperature = float(snakemake.wildcards.temperature)  # noqa: F821
dataset = replica_state_stage(system, read_netcdf(snakemake.input.replicas), temperature, log=log)  # noqa: F821
topology = load_system_molecule(system).topology
write_amber_netcdf(snakemake.output.trajectory, dataset["positions"].values, topology,  # noqa: F821
                   dataset["time"].values)
write_netcdf(dataset, snakemake.output.samples, config=params)  # noqa: F821
