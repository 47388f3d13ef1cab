"""Rule train_flow: fit a flow to the target-temperature MD samples (a Boltzmann generator for molecules)."""

from _bootstrap import start

log = start(snakemake)  # noqa: F821

import torch  # noqa: E402

from boltzflow.io import read_netcdf, write_netcdf  # noqa: E402
from boltzflow.molecule_stages import fit_molecule_flow  # noqa: E402
from boltzflow.stages import curves_dataset, fit_flow, save_flow  # noqa: E402
from boltzflow.systems import system_from_config  # noqa: E402

torch.set_num_threads(snakemake.threads)  # noqa: F821
params = {"system": snakemake.params.system, "flow": snakemake.params.flow}  # noqa: F821
system = system_from_config(snakemake.wildcards.system, params["system"])  # noqa: F821
# A killed job leaves its checkpoint beside the output; the rerun resumes from it.
checkpoint = f"{snakemake.output.model}.checkpoint"  # noqa: F821
md = read_netcdf(snakemake.input.md)  # noqa: F821
if params["system"]["type"] == "molecule":
    model, curves = fit_molecule_flow(system, md, params["flow"], log=log, checkpoint_path=checkpoint,
                                      energy_workers=snakemake.threads)  # noqa: F821
else:
    model, curves = fit_flow(system, md, params["flow"], log=log, checkpoint_path=checkpoint)
save_flow(model, snakemake.output.model)  # noqa: F821
write_netcdf(curves_dataset(curves), snakemake.output.curves, config=params)  # noqa: F821
