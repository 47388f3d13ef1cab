"""Rule figure_free_energy_surfaces: F over the first two CVs per estimator."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf
from boltzflow.plots import free_energy_surfaces, save_figure

settings = snakemake.params.figures
figure = free_energy_surfaces(read_netcdf(snakemake.input.surface), settings["max_kt"], settings["style"])
save_figure(figure, snakemake.output[0])
