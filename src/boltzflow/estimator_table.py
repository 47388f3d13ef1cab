"""Every estimator, declared once: read by the workflow (``rules/common.smk``), the figures and the tests.

An estimator turns samples into free energies. ``mbar`` is the MD reference; every model estimator has
a samples file ``samples/{name}.nc`` made by the last of its ``jobs`` and an estimates
file ``analysis/estimates_{name}.nc`` made by ``reweight``. Adding one = its algorithm module, its entry
here, its rule if it has its own job, its tests and a README line.

This module imports nothing heavy: the Snakefile reads it in the Snakemake process.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Estimator:
    """One estimator of state free energies, profiles and ln Z at the target temperature.

    ``model``: the trained model it needs ("flow" or "score"), or None (the MD reference).
    ``jobs``: the jobs (their benchmark files, ``benchmarks/{job}.tsv``) whose CPU seconds it costs beyond
    the MD (the reweight job is added for model
    estimators; its ``_raw`` companion costs the same without it).
    ``weighted``: its samples carry importance weights (False: equally weighted chain states, no ESS).
    ``raw_companion``: the summary also shows the model without weights (``{name}_raw``), to show the bias
    that reweighting removes.
    ``error``: how its standard errors are computed.
    ``ladder``: its model samples every temperature of the ladder as well, and gives f(T) in
    ``analysis/ladder_{name}.nc`` from ``samples/{name}_temperatures.nc`` (``stages.ladder``).
    """

    name: str
    label: str
    model: str | None
    jobs: tuple[str, ...]
    weighted: bool
    raw_companion: bool
    error: str
    ladder: bool = False


BOOTSTRAP = "bootstrap over samples"
REPLICATES = "spread of independent runs (smc.replicates)"
REFERENCE = Estimator("mbar", "MD (MBAR)", None, (), weighted=True, raw_companion=False,
                      error="MBAR asymptotic, on the decorrelated subsample")
#: The exact answer of systems whose density can be integrated on a grid (``system.exact_quadrature``).
QUADRATURE = Estimator("quadrature", "exact (quadrature)", None, ("quadrature",), weighted=False, raw_companion=False,
                       error="discretization: difference to half the grid resolution")

#: The model estimators, in the order of the summary and the figures.
ESTIMATORS = (
    Estimator("flow", "flow, reweighted", "flow", ("train_flow", "sample_flow"), True, True, BOOTSTRAP),
    Estimator("score_exact", "score, exact", "score", ("train_score", "sample_score_exact"), True, True, BOOTSTRAP),
    Estimator("score_hutchinson", "score, Hutchinson", "score", ("train_score", "sample_score_hutchinson"),
              True, False, BOOTSTRAP),
    Estimator("score_perturbation", "score, flow perturbation", "score",
              ("train_score", "sample_score_perturbation"), True, False, BOOTSTRAP),
    Estimator("score_perturbation_multistep", "score, FP++ (multi-step)", "score",
              ("train_score", "sample_score_perturbation_multistep"), True, False, BOOTSTRAP),
    Estimator("flow_ladder", "flow, temperature-conditioned", "flow_ladder", ("train_flow_ladder", "sample_flow_ladder"),
              True, False, BOOTSTRAP, ladder=True),
    Estimator("flow_smc", "flow + SMC", "flow", ("train_flow", "smc_flow"), True, False,
              REPLICATES),
    Estimator("score_smc", "score + SMC", "score", ("train_score", "smc_score"), True, False,
              REPLICATES),
    Estimator("flow_mcmc", "flow + MCMC", "flow", ("train_flow", "sample_flow", "flow_mcmc"), False, False,
              "bootstrap over whole chains"),
)
BY_NAME = {estimator.name: estimator for estimator in ESTIMATORS}


def learns_the_ladder(name: str, annealing: bool) -> bool:
    """Whether the model of estimator ``name`` (or of its ``_raw`` companion) learns the MD of every ladder
    temperature, not the target's alone: the temperature-conditioned flow's always, the flow's (and so its
    SMC and MCMC) when it anneals from the hottest temperature (``flow.anneal_steps`` > 0)."""
    base = name.removesuffix("_raw")
    if base not in BY_NAME:
        return False
    model = BY_NAME[base].model
    return model == "flow_ladder" or (annealing and model == "flow")


def label(name: str) -> str:
    """The figure label of an estimator or of its ``_raw`` companion ("flow, unweighted")."""
    if name in (REFERENCE.name, QUADRATURE.name):
        return REFERENCE.label if name == REFERENCE.name else QUADRATURE.label
    base = name.removesuffix("_raw")
    if base != name and base in BY_NAME:
        return f"{BY_NAME[base].model}, unweighted"
    return BY_NAME[name].label if name in BY_NAME else name
