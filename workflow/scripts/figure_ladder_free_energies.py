"""Rule figure_ladder_free_energies: f(T) of the temperature-conditioned models against MBAR, and their ESS/N."""

from pathlib import Path

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf
from boltzflow.plots import ladder_free_energies, save_figure
from boltzflow.settings import FigureSettings, from_block

# analysis/ladder_{estimator}.nc → {estimator: f(T)}
ladders = {Path(path).stem.removeprefix("ladder_"): read_netcdf(path) for path in snakemake.input.ladders}
figure = ladder_free_energies(read_netcdf(snakemake.input.mbar), ladders, from_block(FigureSettings, snakemake.params.figures))
save_figure(figure, snakemake.output[0])
