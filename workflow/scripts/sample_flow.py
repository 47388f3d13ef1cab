"""Rule sample_flow: draw samples from the trained flow with ln q and the reduced energy u."""

from _bootstrap import start

log = start(snakemake)  # noqa: F821

import torch  # noqa: E402

from boltzflow.io import write_netcdf  # noqa: E402
from boltzflow.molecule_stages import molecule_sample_stage  # noqa: E402
from boltzflow.stages import load_flow, sample_stage  # noqa: E402
from boltzflow.systems import system_from_config  # noqa: E402

torch.set_num_threads(snakemake.threads)  # noqa: F821
params = {"system": snakemake.params.system, "sampling": snakemake.params.sampling}  # noqa: F821
system = system_from_config(snakemake.wildcards.system, params["system"])  # noqa: F821
model = load_flow(snakemake.input.model)  # noqa: F821
if params["system"]["type"] == "molecule":
    dataset = molecule_sample_stage(system, model, params["sampling"], log=log,
                                    energy_workers=snakemake.threads)  # noqa: F821
else:
    dataset = sample_stage(system, model, params["sampling"], log=log)
write_netcdf(dataset, snakemake.output.samples, config=params)  # noqa: F821
