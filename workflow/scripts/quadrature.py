"""Rule quadrature: the exact answer of a 2D system on the MBAR grid → estimates_quadrature.nc."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf, write_netcdf
from boltzflow.settings import AnalysisSettings, from_block
from boltzflow.stages.quadrature import quadrature_stage
from boltzflow.systems import system_from_config

params = snakemake.params.settings
system = system_from_config(snakemake.wildcards.system, params["system"])
estimates = quadrature_stage(system, read_netcdf(snakemake.input.observables),
                             from_block(AnalysisSettings, params["analysis"]), log=log)
write_netcdf(estimates, snakemake.output.estimates, config=params)
