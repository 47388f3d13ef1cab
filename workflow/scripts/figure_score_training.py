"""Rule figure_score_training: the score model's denoising score-matching loss."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf
from boltzflow.plots import save_figure, score_training_curves

figure = score_training_curves(read_netcdf(snakemake.input.curves), snakemake.params.figures["style"])
save_figure(figure, snakemake.output[0])
