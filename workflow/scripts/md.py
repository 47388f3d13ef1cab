"""Rule md: Langevin MD of one system at one temperature → decorrelated samples (netCDF)."""

from _bootstrap import start

log = start(snakemake)  # noqa: F821

from boltzflow.io import write_netcdf  # noqa: E402
from boltzflow.md import LangevinSettings  # noqa: E402
from boltzflow.stages import md_stage  # noqa: E402
from boltzflow.systems import system_from_config  # noqa: E402

params = snakemake.params.system  # noqa: F821
system = system_from_config(snakemake.wildcards.system, params)  # noqa: F821
# A killed job leaves its checkpoint beside the output; the rerun resumes from it.
checkpoint = f"{snakemake.output.samples}.checkpoint"  # noqa: F821
dataset = md_stage(system, params["temperatures"][0], LangevinSettings.from_config(params["md"]), log=log,
                   checkpoint_path=checkpoint)
write_netcdf(dataset, snakemake.output.samples, config=params)  # noqa: F821
