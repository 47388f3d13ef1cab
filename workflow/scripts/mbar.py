"""Rule mbar: MBAR over the temperature ladder → ladder free energies and target-temperature observables."""

from _bootstrap import start

log = start(snakemake)  # noqa: F821

from boltzflow.io import read_netcdf, write_netcdf  # noqa: E402
from boltzflow.stages import mbar_stage  # noqa: E402
from boltzflow.systems import system_from_config  # noqa: E402

params = snakemake.params.system  # noqa: F821
system = system_from_config(snakemake.wildcards.system, params)  # noqa: F821
md = [read_netcdf(path) for path in snakemake.input.md]  # noqa: F821
ladder, observables = mbar_stage(system, md, params["bins"], log=log)
write_netcdf(ladder, snakemake.output.ladder, config=params)  # noqa: F821
write_netcdf(observables, snakemake.output.observables, config=params)  # noqa: F821
