"""Rule figure_free_energy_surfaces: F over the first two CVs per estimator."""

from _bootstrap import start

log = start(snakemake)  # noqa: F821

from boltzflow.io import read_netcdf  # noqa: E402
from boltzflow.plots import free_energy_surfaces, save_figure  # noqa: E402

settings = snakemake.params.figures  # noqa: F821
figure = free_energy_surfaces(read_netcdf(snakemake.input.surface), settings["max_kt"], settings["style"])  # noqa: F821
save_figure(figure, snakemake.output[0])  # noqa: F821
