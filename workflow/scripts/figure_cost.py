"""Rule figure_cost: CPU seconds against ΔF error and ESS/N for every estimator."""

from _bootstrap import start

log = start(snakemake)  # noqa: F821

from boltzflow.io import read_netcdf  # noqa: E402
from boltzflow.plots import cost_figure, save_figure  # noqa: E402

figure = cost_figure(read_netcdf(snakemake.input.summary), snakemake.params.figures["style"])  # noqa: F821
save_figure(figure, snakemake.output[0])  # noqa: F821
