"""Samplers on top of any trained model: latent-space SMC to the target, and flow-proposal MCMC.

Both write the model-sample contract (positions, log_q NaN, reduced_energy, log_w), so reweighting, the
summary and the figures treat them like every other estimator.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from boltzflow.settings import MCMCSettings, ScoreSamplingSettings, SMCSettings
from boltzflow.stages.datasets import variable, weighted_samples_dataset


def latent_model(generative: str, path, device: str, score_sampling: ScoreSamplingSettings | None = None,
                 likelihood: str | None = None, log=print):
    """A trained model file as a map from latent noise: a flow (``generative == "flow"``) or a score model
    with the log q estimator ``likelihood`` and the ODE settings of ``score_sampling``."""
    from boltzflow.devices import select_device
    from boltzflow.generators import FlowLatent
    from boltzflow.stages.flow import load_flow
    from boltzflow.stages.score import ScoreLatent, load_score

    device = select_device(device, log=log)
    if generative == "flow":
        return FlowLatent(load_flow(path).to(device))
    model = load_score(path).double().to(device)
    return ScoreLatent(model, likelihood, score_sampling.ode_steps, score_sampling.probes(likelihood),
                       integrator_check_samples=score_sampling.integrator_check_samples)


def smc_stage(system, model, settings: SMCSettings, log=print, energy_workers: int = 1) -> xr.Dataset:
    """Independent SMC replicates from a latent model (``latent_model``) to the target → samples dataset.

    Every replicate's particles, concatenated along ``sample``, with ``replicate`` saying which run each
    came from; within replicate r the log-mean-exp of ``log_w`` is that run's ln Ẑ_r
    (``replicate_log_z``), so all particles pooled give ln mean_r Ẑ_r (attribute ``smc_log_z``). The
    per-level records are [replicate, level], NaN where a run took fewer levels.
    """
    from boltzflow.smc import run_smc_replicates

    if getattr(model, "likelihood", None) == "hutchinson":
        raise ValueError("SMC needs unbiased weights: use exact, perturbation or perturbation_multistep")

    with system.energy(energy_workers) as energy:
        result = run_smc_replicates(model.decode, energy, model.latent_dim, settings, log=log)
        # A score model's weights come from its ODE likelihood: measure that integrator's error too
        # (at β = 1 SMC targets the same tilted distribution as importance sampling with those weights).
        check = model.check_integrator(system, energy, log=log) if hasattr(model, "check_integrator") else None
    dataset = weighted_samples_dataset(system, result.positions, result.log_w, result.reduced_energy,
                                       "SMC log weight (log-mean-exp within a replicate = its ln Z estimate)")
    # The ``replicate`` dimension has no index: that name is the per-particle label, a (non-index) coordinate
    # along ``sample`` as xarray requires; replicate r is row r of the per-replicate variables.
    dataset = dataset.assign_coords(replicate=variable("sample", result.replicate, "1",
                                                       "independent SMC run the particle comes from"))
    dataset["replicate_log_z"] = variable("replicate", result.log_z, "1",
                                          f"ln Z estimate of each replicate ({system.log_z_long_name})")
    dataset["replicate_seed"] = variable("replicate", result.seeds, "1", "seed of each replicate (from smc.seed)")
    level_dims = ("replicate", "level")
    dataset["beta"] = variable(level_dims, result.per_level("betas"), "1",
                               "annealing exponent β of each SMC level (NaN: the replicate took fewer levels)")
    dataset["acceptance"] = variable(level_dims, result.per_level("acceptance"), "1",
                                     "MH acceptance rate of the moves at the level (NaN: no such level)")
    dataset["level_ess_fraction"] = variable(level_dims, result.per_level("ess_before_resampling"), "1",
                                             "ESS/N after reweighting to the level, before resampling (NaN: no such level)")
    dataset.attrs.update({"acceptance_rate": float(np.mean(np.concatenate([run.acceptance for run in result.runs]))),
                          "smc_log_z": result.pooled_log_z,
                          "resamplings": int(sum(run.resamplings for run in result.runs)),
                          "replicates": settings.replicates, "particles_per_replicate": settings.n_particles})
    if check is not None:
        from boltzflow.stages.score import with_integrator_check

        dataset = with_integrator_check(dataset, system, check)
    return dataset


def mcmc_stage(system, samples: xr.Dataset, settings: MCMCSettings, log=print) -> xr.Dataset:
    """Independence MH over a model's weighted draws → the chain states, equally weighted."""
    from boltzflow.samplers import independence_metropolis

    index, rate = independence_metropolis(samples["log_w"].values, settings.chains, settings.burn_in, settings.seed)
    log(f"independence MH: {settings.chains} chains, acceptance {rate:.4f}, {len(index)} states kept "
        f"after {settings.burn_in} burn-in steps per chain")
    # A chain that never left a non-finite first draw keeps no weight (its positions may be NaN).
    finite = np.isfinite(samples["log_w"].values[index])
    dataset = weighted_samples_dataset(system, samples["positions"].values[index], np.where(finite, 0.0, -np.inf),
                                       samples["reduced_energy"].values[index],
                                       "log weight of a chain state (0: the chain's states are equally weighted)")
    dataset["chain"] = variable("sample", np.tile(np.arange(settings.chains), len(index) // settings.chains), "1",
                                "chain of the state (standard errors resample whole chains)")
    dataset.attrs["acceptance_rate"] = rate
    # The proposals' weights and CVs: the reweight stage judges the chains by the tails of those weights, in
    # all and in each state (this rule's system carries no states, so that changing them reruns no sampler).
    dataset["proposal_log_w"] = variable("proposal", samples["log_w"].values, "1",
                                         "log-weight -u - ln q of each proposal (the flow's samples)")
    dataset["proposal_cv_values"] = variable(("proposal", "cv"), samples["cv_values"].values,
                                             samples["cv_values"].attrs.get("units", "1"), "CVs of each proposal")
    return dataset
