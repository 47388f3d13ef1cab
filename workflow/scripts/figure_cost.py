"""Rule figure_cost: CPU seconds against ΔF error and ESS/N for every estimator, with and without the MD
the models train on."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.benchmark_files import cpu_seconds
from boltzflow.io import read_netcdf
from boltzflow.plots import cost_figure, save_figure
from boltzflow.settings import FigureSettings, from_block

training_md_seconds = cpu_seconds(snakemake.input.training_md_benchmarks)
log(f"the MD the models train on cost {training_md_seconds:.4g} CPU seconds")
figure = cost_figure(read_netcdf(snakemake.input.summary), training_md_seconds,
                     from_block(FigureSettings, snakemake.params.figures))
save_figure(figure, snakemake.output[0])
