"""Rule figure_cost: CPU seconds against ΔF error and ESS/N for every estimator, with and without the MD
the models train on."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.benchmark_files import cpu_seconds, training_md_seconds
from boltzflow.estimator_table import learns_the_ladder
from boltzflow.io import read_netcdf
from boltzflow.plots import cost_figure, save_figure
from boltzflow.settings import FigureSettings, from_block

summary = read_netcdf(snakemake.input.summary)
target_md_seconds = cpu_seconds(snakemake.input.training_md_benchmarks)
ladder_md_seconds = cpu_seconds(snakemake.input.md_benchmarks)
md_seconds = training_md_seconds(summary["estimator"].values, target_md_seconds, ladder_md_seconds,
                                 snakemake.params.flow_anneals)
log(f"the MD the models train on cost {target_md_seconds:.4g} CPU seconds at the target temperature, "
    f"{ladder_md_seconds:.4g} over the ladder (for "
    f"{', '.join(name for name in md_seconds if learns_the_ladder(name, snakemake.params.flow_anneals)) or 'none'})")
figure = cost_figure(summary, md_seconds, from_block(FigureSettings, snakemake.params.figures))
save_figure(figure, snakemake.output[0])
