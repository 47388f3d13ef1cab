# boltzflow: unbiased Boltzmann sampling with generative models, checked against molecular dynamics.
#
# Results path scheme, per system named in config["systems"]:
#   results/{system}/md/{temperature}K.nc          MD samples at each ladder temperature (simulated here, or
#                                                  read from a molecule's md.files)
#   results/{system}/analysis/mbar.nc              MBAR reduced free energies over the ladder
#   results/{system}/analysis/mbar_observables.nc  MBAR state ΔF, profiles and surface at the target
#   results/{system}/models/flow.pt, flow_training.nc, score.pt, score_training.nc, flow_ladder.pt (the
#                                                  temperature-conditioned flow), flow_ladder_training.nc
#   results/{system}/samples/{estimator}.nc        model samples with ln q, u and ln w, one file per
#                                                  estimator (flow, score_exact, ..., flow_smc, flow_mcmc)
#   results/{system}/samples/{estimator}_trajectory.nc, {estimator}_resampled.nc
#                                                  molecules: the samples as AMBER trajectories, all of them
#                                                  and an ensemble drawn by importance weight
#   results/{system}/samples/flow_ladder_temperatures.nc  its weights at every ladder temperature
#   results/{system}/analysis/estimates_{estimator}.nc   reweighted estimates with bootstrap errors
#   results/{system}/analysis/ladder_{estimator}.nc      f(T) over the ladder from a temperature-conditioned model
#   results/{system}/summary.nc, summary.csv       every estimator against the MBAR reference
#   results/{system}/analysis/fes_profiles.nc, fes_surface.nc
#   results/{system}/figures/*.png
#   results/{system}/logs/, results/{system}/benchmarks/


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/md.smk"
include: "rules/analysis.smk"
include: "rules/train.smk"
include: "rules/sample.smk"
include: "rules/figures.smk"


rule all:
    """Every output of the systems in config["run"] (default: all systems)."""
    input:
        all_outputs(),
    default_target: True
