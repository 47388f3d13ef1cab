"""Rule ladder: reduced free energies f(T) over the ladder from a temperature-conditioned model's samples."""

from _bootstrap import start

log = start(snakemake)

from boltzflow.io import read_netcdf, write_netcdf
from boltzflow.settings import AnalysisSettings, from_block
from boltzflow.stages.ladder import ladder_estimates

params = {"analysis": snakemake.params.analysis}
ladder = ladder_estimates(read_netcdf(snakemake.input.samples), from_block(AnalysisSettings, params["analysis"]))
for temperature, f, df, ess, reason in zip(ladder.temperature.values, ladder.f.values, ladder.df.values,
                                           ladder.ess_fraction.values, ladder.reason.values, strict=True):
    log(f"{temperature:g} K: f = {f:.3f} ± {df:.3f}, ESS/N {ess:.4f}" + (f"  UNRELIABLE: {reason}" if reason else ""))
write_netcdf(ladder, snakemake.output.ladder, config=params)
