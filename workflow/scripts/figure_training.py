"""Rule figure_training: flow training and validation curves."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf
from boltzflow.plots import training_curves, save_figure

figure = training_curves(read_netcdf(snakemake.input.curves), snakemake.params.figures["style"])
save_figure(figure, snakemake.output[0])
