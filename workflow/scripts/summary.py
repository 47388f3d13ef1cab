"""Rule summary: every estimator against the MBAR reference → summary.nc/.csv and fes_{cv}.nc."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import atomic_path, read_netcdf, write_netcdf
from boltzflow.settings import AnalysisSettings, from_block
from boltzflow.benchmark_files import cpu_seconds as benchmark_cpu_seconds
from boltzflow.stages.summary import summary_stage, summary_table, unreliable_lines
from boltzflow.systems import system_from_config

inputs = snakemake.input
params = snakemake.params.settings
system = system_from_config(snakemake.wildcards.system, params["system"])
# Each estimator costs the CPU time of the rules that produce it: MBAR all the MD and MBAR; a model estimator
# its training, sampling (or SMC, MCMC) and reweighting (not the target-temperature MD it trains on, which
# MBAR also uses); the raw model the same without reweighting.
cpu_seconds = {"mbar": benchmark_cpu_seconds([*inputs.md_benchmarks, inputs.mbar_benchmark])}
cpu_seconds.update({name: benchmark_cpu_seconds(files) for name, files in snakemake.params.costs.items()})
summary, profiles, surface = summary_stage(
    system, read_netcdf(inputs.observables), [read_netcdf(path) for path in inputs.estimates], cpu_seconds,
    from_block(AnalysisSettings, params["analysis"]))
outputs = snakemake.output
write_netcdf(profiles, outputs.profiles, config=params)
write_netcdf(surface, outputs.surface, config=params)
with atomic_path(outputs.table) as path:
    summary_table(summary).to_csv(path, index=False, float_format="%.6g")
write_netcdf(summary, outputs.summary, config=params)
log(summary_table(summary).drop(columns="unreliable_reason").to_string(index=False))
for line in unreliable_lines(summary):
    log(line)
