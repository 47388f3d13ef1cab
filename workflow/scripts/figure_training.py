"""Rule figure_training: flow training and validation curves."""

from _bootstrap import start

log = start(snakemake)  # noqa: F821

from boltzflow.io import read_netcdf  # noqa: E402
from boltzflow.plots import training_curves, save_figure  # noqa: E402

figure = training_curves(read_netcdf(snakemake.input.curves), snakemake.params.figures["style"])  # noqa: F821
save_figure(figure, snakemake.output[0])  # noqa: F821
