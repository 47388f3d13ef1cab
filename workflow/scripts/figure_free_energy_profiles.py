"""Rule figure_free_energy_profiles: F along each CV per estimator with error bands."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf
from boltzflow.plots import free_energy_profiles, save_figure

figure = free_energy_profiles(read_netcdf(snakemake.input.profiles), snakemake.params.figures["style"])
save_figure(figure, snakemake.output[0])
