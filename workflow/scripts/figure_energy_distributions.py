"""Rule figure_energy_distributions: potential energies of MD, flow and reweighted flow at the target."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf
from boltzflow.plots import energy_distributions, save_figure

inputs = snakemake.input
figure = energy_distributions(read_netcdf(inputs.md), read_netcdf(inputs.samples),
                              snakemake.params.figures["style"])
save_figure(figure, snakemake.output[0])
