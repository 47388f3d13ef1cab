"""Rule figure_free_energy_profiles: F along each CV per estimator with error bands."""

from _bootstrap import start

log = start(snakemake)  # noqa: F821

from boltzflow.io import read_netcdf  # noqa: E402
from boltzflow.plots import free_energy_profiles, save_figure  # noqa: E402

figure = free_energy_profiles(read_netcdf(snakemake.input.profiles), snakemake.params.figures["style"])  # noqa: F821
save_figure(figure, snakemake.output[0])  # noqa: F821
