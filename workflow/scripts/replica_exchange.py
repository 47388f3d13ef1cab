"""Rule replica_exchange: temperature replica exchange of a molecule → every recorded frame (netCDF)."""

from _bootstrap import start

log = start(snakemake)  # noqa: F821

from boltzflow.io import write_netcdf  # noqa: E402
from boltzflow.molecule_stages import replica_exchange_stage  # noqa: E402
from boltzflow.systems import system_from_config  # noqa: E402

params = snakemake.params.system  # noqa: F821
system = system_from_config(snakemake.wildcards.system, params)  # noqa: F821
# A killed job leaves its checkpoint beside the output; the rerun resumes from it.
checkpoint = f"{snakemake.output.replicas}.checkpoint"  # noqa: F821
dataset = replica_exchange_stage(system, params["md"], log=log, checkpoint_path=checkpoint,
                                 threads=snakemake.threads)  # noqa: F821
write_netcdf(dataset, snakemake.output.replicas, config=params)  # noqa: F821
