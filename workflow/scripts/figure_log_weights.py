"""Rule figure_log_weights: histogram of the flow samples' log importance weights."""

from _bootstrap import start

log = start(snakemake)  # noqa: F821

from boltzflow.io import read_netcdf  # noqa: E402
from boltzflow.plots import log_weight_histogram, save_figure  # noqa: E402

inputs = snakemake.input  # noqa: F821
log_w = read_netcdf(inputs.samples)["log_w"].values
ess_fraction = float(read_netcdf(inputs.estimates)["ess_fraction"].sel(estimator="flow"))
figure = log_weight_histogram(log_w, ess_fraction, snakemake.params.figures["style"])  # noqa: F821
save_figure(figure, snakemake.output[0])  # noqa: F821
