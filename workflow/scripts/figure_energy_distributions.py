"""Rule figure_energy_distributions: potential energies of MD, flow and reweighted flow at the target."""

from _bootstrap import start

log = start(snakemake)  # noqa: F821

from boltzflow.io import read_netcdf  # noqa: E402
from boltzflow.plots import energy_distributions, save_figure  # noqa: E402

inputs = snakemake.input  # noqa: F821
figure = energy_distributions(read_netcdf(inputs.md), read_netcdf(inputs.samples),  # noqa: F821
                              snakemake.params.figures["style"])  # noqa: F821
save_figure(figure, snakemake.output[0])  # noqa: F821
