"""Rule reweight: importance-reweighted estimates from model samples, with bootstrap errors."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf, write_netcdf
from boltzflow.settings import AnalysisSettings, from_block
from boltzflow.stages.reweight import reweight_stage
from boltzflow.systems import system_from_config

params = snakemake.params.settings
system = system_from_config(snakemake.wildcards.system, params["system"])
estimates = reweight_stage(system, read_netcdf(snakemake.input.samples), read_netcdf(snakemake.input.observables),
                           snakemake.wildcards.estimator, from_block(AnalysisSettings, params["analysis"]), log=log)
write_netcdf(estimates, snakemake.output.estimates, config=params)
