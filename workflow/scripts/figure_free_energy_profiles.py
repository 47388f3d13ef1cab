"""Rule figure_free_energy_profiles: F along each CV per estimator beside the references, with error bands."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf
from boltzflow.plots import free_energy_profiles, save_figure
from boltzflow.settings import FigureSettings, from_block

inputs = snakemake.input
figure = free_energy_profiles(read_netcdf(inputs.profiles), read_netcdf(inputs.summary),
                              from_block(FigureSettings, snakemake.params.figures))
save_figure(figure, snakemake.output[0])
