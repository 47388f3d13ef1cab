"""Rule reweight: importance-reweighted estimates from model samples, with bootstrap errors."""

from _bootstrap import start

log = start(snakemake)  # noqa: F821

from boltzflow.io import read_netcdf, write_netcdf  # noqa: E402
from boltzflow.stages import reweight_stage  # noqa: E402
from boltzflow.systems import system_from_config  # noqa: E402

params = snakemake.params.settings  # noqa: F821
system = system_from_config(snakemake.wildcards.system, params["system"])  # noqa: F821
estimates = reweight_stage(
    system, read_netcdf(snakemake.input.samples), read_netcdf(snakemake.input.observables),  # noqa: F821
    estimator=snakemake.wildcards.estimator, replicates=params["bootstrap"], seed=params["seed"],  # noqa: F821
    trim_fraction=params["trim_fraction"], log=log, include_raw=params["include_raw"])
write_netcdf(estimates, snakemake.output.estimates, config=params)  # noqa: F821
