"""Rule summary: every estimator against the MBAR reference → summary.nc/.csv and fes_{cv}.nc."""

from _bootstrap import start

log = start(snakemake)  # noqa: F821

from boltzflow.io import atomic_path, read_netcdf, write_netcdf  # noqa: E402
from boltzflow.stages import benchmark_cpu_seconds, summary_stage, summary_table  # noqa: E402
from boltzflow.systems import system_from_config  # noqa: E402

inputs = snakemake.input  # noqa: F821
params = snakemake.params.settings  # noqa: F821
system = system_from_config(snakemake.wildcards.system, params["system"])  # noqa: F821
# Each estimator costs the CPU time of the rules that produce it: MBAR all the MD and MBAR; the flow its
# training, sampling and reweighting (not the target-temperature MD it trains on, which MBAR also uses).
model_cost = benchmark_cpu_seconds([inputs.train_benchmark, inputs.sample_benchmark])
cpu_seconds = {
    "mbar": benchmark_cpu_seconds([*inputs.md_benchmarks, inputs.mbar_benchmark]),
    "flow": model_cost + benchmark_cpu_seconds([inputs.reweight_benchmark]),
    "flow_raw": model_cost,
}
summary, profiles, surface = summary_stage(
    system, read_netcdf(inputs.observables), [read_netcdf(inputs.estimates)], cpu_seconds)
outputs = snakemake.output  # noqa: F821
write_netcdf(profiles, outputs.profiles, config=params)
write_netcdf(surface, outputs.surface, config=params)
with atomic_path(outputs.table) as path:
    summary_table(summary).to_csv(path, index=False, float_format="%.6g")
write_netcdf(summary, outputs.summary, config=params)
log(summary_table(summary).to_string(index=False))
