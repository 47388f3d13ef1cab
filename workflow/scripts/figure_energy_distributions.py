"""Rule figure_energy_distributions: potential energies of MD, flow and reweighted flow at the target."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf
from boltzflow.plots import energy_distributions, save_figure
from boltzflow.settings import FigureSettings, from_block

inputs = snakemake.input
figure = energy_distributions(read_netcdf(inputs.md), read_netcdf(inputs.samples),
                              from_block(FigureSettings, snakemake.params.figures))
save_figure(figure, snakemake.output[0])
