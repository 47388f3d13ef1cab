"""Rule figure_training: flow training and validation curves, each loss term on its own axis, and ESS/N."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf
from boltzflow.plots import save_figure, training_curves
from boltzflow.settings import FigureSettings, from_block

figure = training_curves(read_netcdf(snakemake.input.curves), from_block(FigureSettings, snakemake.params.figures),
                         estimator=snakemake.params.estimator)
save_figure(figure, snakemake.output[0])
