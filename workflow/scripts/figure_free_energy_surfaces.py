"""Rule figure_free_energy_surfaces: F over the first two CVs per estimator."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf
from boltzflow.plots import free_energy_surfaces, save_figure
from boltzflow.settings import FigureSettings, from_block

inputs = snakemake.input
figure = free_energy_surfaces(read_netcdf(inputs.surface), read_netcdf(inputs.summary),
                              from_block(FigureSettings, snakemake.params.figures))
save_figure(figure, snakemake.output[0])
