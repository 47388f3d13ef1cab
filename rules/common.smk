import sys
from pathlib import Path

# The science package lives in src/; the Snakefile only needs its dependency-free config checks, the
# system factory and the estimator table.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from boltzflow.config import ConfigError, load_schema, temperature_label, validate_config
from boltzflow.estimator_table import BY_NAME, ESTIMATORS, QUADRATURE
from boltzflow.settings import LIKELIHOOD_PROBES
from boltzflow.systems import MD_SOURCE_KEYS, config_keys, system_from_config


try:
    validate_config(config, load_schema(Path(workflow.basedir) / "config" / "schema.yaml"))
except ConfigError as error:
    sys.exit(f"boltzflow: invalid config: {error}")

SYSTEMS = {name: system_from_config(name, block) for name, block in config["systems"].items()}
#: The systems the default target runs: config["run"], else all of them.
RUN = config.get("run", list(SYSTEMS))


def check_molecules_with_openmm():
    """Parametrize each molecule once, so that a residue the force field cannot match, or a CV whose four
    atoms are not a bonded chain (1-based PDB serials for 0-based indices), stops the run here.

    Only where OpenMM is importable in the Snakemake process (the pip route); with --use-conda it lives in
    the rule environments, and the MD job reports the same one-line error first thing. Whether the chosen
    OpenMM platform exists is checked by the job itself: it may run on another node (a GPU one).
    """
    try:
        from boltzflow.molecules import MoleculeError
    except ImportError:
        return
    for name, system in SYSTEMS.items():
        try:
            system.check_backend()
        except MoleculeError as error:
            message = str(error).replace("molecule.", f"systems.{name}.", 1)
            sys.exit(f"boltzflow: invalid config: {message}")


check_molecules_with_openmm()


def systems_with_md(method):
    """A wildcard pattern for the systems whose MD takes one route (one that matches nothing if none do)."""
    names = [name for name, system in SYSTEMS.items() if system.md_method == method]
    return "|".join(names) if names else "(?!)"


def enabled_estimators(system_name):
    switches = config["systems"][system_name]["estimators"]
    return [estimator.name for estimator in ESTIMATORS if switches[estimator.name]]


LANGEVIN_SYSTEMS = systems_with_md("langevin")
REPLICA_EXCHANGE_SYSTEMS = systems_with_md("replica_exchange")
TRAJECTORY_SYSTEMS = systems_with_md("trajectories")
#: Systems whose samples are atoms of a topology: their model samples are also written as trajectories.
ATOMISTIC_SYSTEMS = "|".join(name for name, system in SYSTEMS.items() if system.atomistic) or "(?!)"


wildcard_constraints:
    system="|".join(config["systems"]),
    temperature=r"[0-9]+(\.[0-9]+)?",
    estimator="|".join(BY_NAME),
    likelihood="|".join(LIKELIHOOD_PROBES),
    generative="flow|score",


def md_files(wildcards):
    temperatures = config["systems"][wildcards.system]["temperatures"]
    return [
        f"results/{wildcards.system}/md/{temperature_label(t)}K.nc" for t in temperatures
    ]


def target_md_file(wildcards):
    return md_files(wildcards)[0]


def ladder_md_files(wildcards):
    """The MD above the target temperature, which a temperature-conditioned model also learns."""
    return md_files(wildcards)[1:]


def annealing_md_files(wildcards):
    """The MD above the target temperature when the flow anneals from the hottest down (flow.anneal_steps)."""
    return ladder_md_files(wildcards) if _system(wildcards)["flow"]["anneal_steps"] else []


#: The jobs whose benchmark files cost the MD of each route (a pattern with {label}: one per temperature).
MD_BENCHMARKS = {"langevin": ["md_{label}K"],
                 "replica_exchange": ["replica_exchange_run{run}", "replica_state_{label}K"],
                 "trajectories": ["import_md_{label}K"]}


def md_benchmarks(wildcards):
    """Benchmark files of every job that produced the MD samples (the MBAR estimate's cost)."""
    return _md_benchmarks(wildcards.system, config["systems"][wildcards.system]["temperatures"])


def training_md_benchmarks(wildcards):
    """Benchmark files of the target-temperature MD the models train on (replica exchange: the whole run)."""
    return _md_benchmarks(wildcards.system, config["systems"][wildcards.system]["temperatures"][:1])


def flow_anneals(wildcards):
    """Whether the flow anneals from the hottest temperature (then it learns every temperature's MD)."""
    return bool(_system(wildcards)["flow"]["anneal_steps"])


def _md_benchmarks(system, temperatures):
    labels = [temperature_label(t) for t in temperatures]
    folder = f"results/{system}/benchmarks"
    names = []
    for pattern in MD_BENCHMARKS[SYSTEMS[system].md_method]:
        if "{label}" in pattern:
            names += [pattern.format(label=label) for label in labels]
        else:
            names += [pattern.format(run=run) for run in replica_exchange_run_numbers(system)]
    return [f"{folder}/{name}.tsv" for name in names]


def molecule_pdb(wildcards):
    return config["systems"][wildcards.system]["pdb"]


def md_trajectory_files(wildcards):
    """The trajectory files a user gave for one temperature (config.py keys them by temperature label)."""
    return config["systems"][wildcards.system]["md"]["files"][wildcards.temperature]


def estimate_files(wildcards):
    """The model estimators' estimates and, where the density can be integrated, the exact answer."""
    names = enabled_estimators(wildcards.system)
    if SYSTEMS[wildcards.system].exact_quadrature:
        names = [QUADRATURE.name, *names]
    return [f"results/{wildcards.system}/analysis/estimates_{name}.nc" for name in names]


def estimator_benchmarks(wildcards):
    """Benchmark files of the rules behind every enabled estimator (their CPU cost in the summary)."""
    return sorted({path for paths in estimator_costs(wildcards).values() for path in paths})


def estimator_costs(wildcards):
    """Per estimator, the benchmark files whose CPU seconds it costs (the raw model: without reweighting)."""
    folder = f"results/{wildcards.system}/benchmarks"
    costs = {QUADRATURE.name: [f"{folder}/quadrature.tsv"]} if SYSTEMS[wildcards.system].exact_quadrature else {}
    for name in enabled_estimators(wildcards.system):
        model = [f"{folder}/{rule}.tsv" for rule in BY_NAME[name].jobs]
        costs[name] = model + [f"{folder}/reweight_{name}.tsv"]
        if BY_NAME[name].raw_companion:
            costs[f"{name}_raw"] = model
    return costs


def _weighted_estimators(system_name):
    """Enabled estimators with importance weights (MCMC states are equally weighted)."""
    return [name for name in enabled_estimators(system_name) if BY_NAME[name].weighted]


def weighted_samples_files(wildcards):
    return [f"results/{wildcards.system}/samples/{name}.nc" for name in _weighted_estimators(wildcards.system)]


def weighted_estimate_files(wildcards):
    return [f"results/{wildcards.system}/analysis/estimates_{name}.nc"
            for name in _weighted_estimators(wildcards.system)]


def smc_model_file(wildcards):
    return f"results/{wildcards.system}/models/{wildcards.generative}.pt"


def figures_of(system_name):
    """The figures a system's enabled estimators call for."""
    estimators = [BY_NAME[name] for name in enabled_estimators(system_name)]
    models = {estimator.model for estimator in estimators}
    figures = ["free_energy_surfaces", "free_energy_profiles", "cost"]
    if any(estimator.weighted for estimator in estimators):
        figures.append("log_weights")
    if "flow" in models:
        figures.append("training")
    if any("sample_flow" in estimator.jobs for estimator in estimators):  # it draws the flow's own samples
        figures.append("energy_distributions")
    if "score" in models:
        figures.append("score_training")
    if any(estimator.ladder for estimator in estimators):
        figures += ["ladder_free_energies", "training_flow_ladder"]
    return figures


def sample_trajectory_files(system_name):
    """A molecule's model samples as AMBER trajectories: every sample and the weight-resampled ensemble."""
    if not SYSTEMS[system_name].atomistic:
        return []
    return [f"results/{system_name}/samples/{name}_{kind}.nc"
            for name in enabled_estimators(system_name) for kind in ("trajectory", "resampled")]


def all_outputs():
    outputs = []
    for system in RUN:
        outputs += [f"results/{system}/summary.nc", f"results/{system}/summary.csv", f"results/{system}/summary.html"]
        outputs += [f"results/{system}/figures/{name}.png" for name in figures_of(system)]
        outputs += sample_trajectory_files(system)
    return outputs


# Each stage gets only the config keys it depends on, through params:, so that Snakemake reruns
# exactly the stages that a change affects (a flow setting never reruns MD).


def _system(wildcards):
    return config["systems"][wildcards.system]


def _target(system, temperatures):
    params = {key: system[key] for key in config_keys(system).target}
    params["temperatures"] = temperatures
    return params


def _cvs(system):
    return {key: system[key] for key in config_keys(system).cvs if key in system}


def md_params(wildcards):
    system = _system(wildcards)
    params = {**_target(system, [float(wildcards.temperature)]), "md": system["md"]}
    # Walkers start uniformly in the bounds box, or in the box the states span without bounds.
    if "bounds" in system:
        params["bounds"] = system["bounds"]
    else:
        params["states"] = system["states"]
    return params


def replica_exchange_run_numbers(system_name):
    return range(1, config["systems"][system_name]["md"]["runs"] + 1)


def replica_exchange_runs(wildcards):
    """The independent replica exchange runs of a molecule, pooled by each temperature's samples."""
    return [f"results/{wildcards.system}/md/replica_exchange_run{run}.nc"
            for run in replica_exchange_run_numbers(wildcards.system)]


def replica_exchange_params(wildcards):
    """One run's settings: the md block without the number of runs (so that adding runs reruns none of
    them) and the keys that choose the MD's source, which a run does not use."""
    system = _system(wildcards)
    md = {key: value for key, value in system["md"].items() if key not in MD_SOURCE_KEYS + ("runs",)}
    return {**_target(system, system["temperatures"]), "md": md}


def import_md_params(wildcards):
    """One temperature's files (a changed list reruns that temperature only), the target and the CVs."""
    system = _system(wildcards)
    params = {**_target(system, [float(wildcards.temperature)]), **_cvs(system)}
    params["files"] = md_trajectory_files(wildcards)
    return params


def replica_split_params(wildcards):
    system = _system(wildcards)
    return {**_target(system, system["temperatures"]), **_cvs(system)}


def mbar_params(wildcards):
    system = _system(wildcards)
    params = {**_target(system, system["temperatures"]), **_cvs(system)}
    params["bins"] = system["analysis"]["bins"]
    return params


def model_params(wildcards):
    """The target (energy at the target temperature) that model training and sampling see."""
    system = _system(wildcards)
    params = _target(system, system["temperatures"][:1])
    params.update({key: system[key] for key in config_keys(system).model if key in system})
    return params


def ladder_model_params(wildcards):
    """A temperature-conditioned model's target: the whole ladder (its first temperature is the target)."""
    system = _system(wildcards)
    params = _target(system, system["temperatures"])
    params.update({key: system[key] for key in config_keys(system).model if key in system})
    return params


def ladder_analysis_params(wildcards):
    """The analysis keys f(T) and its verdict use (bins and the state-level thresholds do not apply)."""
    analysis = _system(wildcards)["analysis"]
    return {key: analysis[key] for key in ("bootstrap", "seed", "max_pareto_k", "min_ess")}


def ladder_estimate_files(wildcards):
    """f(T) of every enabled estimator that covers the ladder."""
    return [f"results/{wildcards.system}/analysis/ladder_{name}.nc"
            for name in enabled_estimators(wildcards.system) if BY_NAME[name].ladder]


def score_sampler_params(wildcards):
    """A score sampler also needs the states: it measures its ODE integrator's error on each state's ΔF."""
    params = model_params(wildcards)
    if getattr(wildcards, "generative", "score") == "score":
        params.update(_cvs(_system(wildcards)))
    return params


def flow_params(wildcards):
    return _system(wildcards)["flow"]


def ladder_flow_params(wildcards):
    """The temperature-conditioned flow's settings: the flow block with flow_ladder's keys on top."""
    return _system(wildcards)["flow_ladder"]


def sampling_params(wildcards):
    """The sampling block without the ladder's sample count, which only the temperature-conditioned flow uses."""
    return {key: value for key, value in _system(wildcards)["sampling"].items() if key != "ladder_samples"}


def ladder_sampling_params(wildcards):
    return _system(wildcards)["sampling"]


def score_params(wildcards):
    return _system(wildcards)["score"]


#: The score_sampling keys every likelihood estimator uses; each adds its own probe count.
SCORE_SAMPLING_KEYS = ["n_samples", "ode_steps", "batch_size", "seed", "device", "integrator_check_samples"]
PROBE_KEYS = {likelihood: [key] if key else [] for likelihood, key in LIKELIHOOD_PROBES.items()}


def score_sampling_params(wildcards):
    """Only the keys of this estimator: a change of Hutchinson probes does not rerun flow perturbation."""
    block = _system(wildcards)["score_sampling"]
    return {key: block[key] for key in SCORE_SAMPLING_KEYS + PROBE_KEYS[wildcards.likelihood]}


def smc_params(wildcards):
    """The smc block, and how to run the model: its device and, for a score model, its ODE settings."""
    system = _system(wildcards)
    if wildcards.generative == "flow":
        smc = {key: value for key, value in system["smc"].items() if key != "score_likelihood"}
        return {"smc": smc, "model": {"device": system["sampling"]["device"]}}
    sampling = system["score_sampling"]
    likelihood = system["smc"]["score_likelihood"]
    model = {key: sampling[key] for key in ["ode_steps", "device", "integrator_check_samples"] + PROBE_KEYS[likelihood]}
    return {"smc": system["smc"], "model": model}


def mcmc_params(wildcards):
    return _system(wildcards)["mcmc"]


def sample_trajectory_params(wildcards):
    """The molecule (its topology) and the resampling settings; the samples file carries the weights."""
    system = _system(wildcards)
    return {"system": _target(system, system["temperatures"][:1]), "trajectories": system["sample_trajectories"]}


def reweight_params(wildcards):
    system = _system(wildcards)
    return {
        "system": {**_target(system, system["temperatures"][:1]), **_cvs(system)},
        "analysis": {key: system["analysis"][key] for key in system["analysis"] if key != "bins"},
    }


def quadrature_params(wildcards):
    """The system and the analysis keys the exact answer uses (its KL/JS at the common sample count)."""
    system = _system(wildcards)
    keys = ("seed", "divergence_samples", "divergence_repeats")
    return {
        "system": {**_target(system, system["temperatures"][:1]), **_cvs(system)},
        "analysis": {key: system["analysis"][key] for key in keys},
    }


def figure_params(wildcards):
    """The style only: a figure that does not clip at max_kt does not rerun when it changes."""
    return {"style": config["figures"]["style"]}


def surface_figure_params(wildcards):
    return {key: config["figures"][key] for key in ("style", "max_kt", "min_bin_effective_samples")}


def profile_figure_params(wildcards):
    return {key: config["figures"][key] for key in ("style", "min_bin_effective_samples")}
