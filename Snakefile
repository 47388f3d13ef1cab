# boltzflow: unbiased Boltzmann sampling with generative models, checked against molecular dynamics.
#
# Results path scheme, per system named in config["systems"]:
#   results/{system}/md/{temperature}K.nc          decorrelated MD samples at each ladder temperature
#   results/{system}/analysis/mbar.nc              MBAR reduced free energies over the ladder
#   results/{system}/analysis/mbar_observables.nc  MBAR state ΔF, profiles and surface at the target
#   results/{system}/models/flow.pt, flow_training.nc
#   results/{system}/samples/flow.nc               flow samples with ln q, u and ln w
#   results/{system}/analysis/estimates_flow.nc    reweighted estimates with bootstrap errors
#   results/{system}/summary.nc, summary.csv       every estimator against the MBAR reference
#   results/{system}/analysis/fes_{cv}.nc, fes_xy.nc
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
    input:
        all_outputs(),
    default_target: True
