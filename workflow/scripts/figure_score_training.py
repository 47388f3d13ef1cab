"""Rule figure_score_training: the score model's denoising score-matching loss."""

from _bootstrap import start

log = start(snakemake)  # noqa: F821

from boltzflow.io import read_netcdf  # noqa: E402
from boltzflow.plots import save_figure, score_training_curves  # noqa: E402

figure = score_training_curves(read_netcdf(snakemake.input.curves), snakemake.params.figures["style"])  # noqa: F821
save_figure(figure, snakemake.output[0])  # noqa: F821
