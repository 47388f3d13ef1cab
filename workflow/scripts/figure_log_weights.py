"""Rule figure_log_weights: histograms of every weighted estimator's log importance weights."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf
from boltzflow.plots import log_weight_histogram, save_figure
from boltzflow.settings import FigureSettings, from_block

inputs = snakemake.input
log_ws, ess = {}, {}
for samples_path, estimates_path in zip(inputs.samples, inputs.estimates):
    estimates = read_netcdf(estimates_path)
    name = str(estimates["estimator"].values[0])
    log_ws[name] = read_netcdf(samples_path)["log_w"].values
    ess[name] = float(estimates["ess_fraction"].sel(estimator=name))
figure = log_weight_histogram(log_ws, ess, read_netcdf(inputs.summary),
                              from_block(FigureSettings, snakemake.params.figures))
save_figure(figure, snakemake.output[0])
