"""Rule mbar: MBAR over the temperature ladder → ladder free energies and target-temperature observables."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf, write_netcdf
from boltzflow.stages.mbar import mbar_stage
from boltzflow.systems import system_from_config

params = snakemake.params.system
system = system_from_config(snakemake.wildcards.system, params)
md = [read_netcdf(path) for path in snakemake.input.md]
ladder, observables = mbar_stage(system, md, params["bins"], log=log, names=list(snakemake.input.md))
write_netcdf(ladder, snakemake.output.ladder, config=params)
write_netcdf(observables, snakemake.output.observables, config=params)
