"""Rule figure_cost: CPU seconds against ΔF error and ESS/N for every estimator."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf
from boltzflow.plots import cost_figure, save_figure

figure = cost_figure(read_netcdf(snakemake.input.summary), snakemake.params.figures["style"])
save_figure(figure, snakemake.output[0])
