"""Rule figure_score_training: the score model's loss terms, each on its own axis."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf
from boltzflow.plots import save_figure, score_training_curves
from boltzflow.settings import FigureSettings, from_block

figure = score_training_curves(read_netcdf(snakemake.input.curves), from_block(FigureSettings, snakemake.params.figures))
save_figure(figure, snakemake.output[0])
