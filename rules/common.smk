import sys
from pathlib import Path

# The science package lives in src/; the Snakefile only needs its dependency-free config checks.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from boltzflow.config import ConfigError, load_schema, temperature_label, validate_config


try:
    validate_config(config, load_schema(Path(workflow.basedir) / "config" / "schema.yaml"))
except ConfigError as error:
    sys.exit(f"boltzflow: invalid config: {error}")


def check_molecules_with_openmm():
    """Parametrize each molecule once, so that a residue the force field cannot match stops the run here.

    Only where OpenMM is importable in the Snakemake process (the pip route); with --use-conda it lives in
    the rule environments, and the MD job reports the same one-line error first thing. Whether the chosen
    OpenMM platform exists is checked by the job itself: it may run on another node (a GPU one).
    """
    try:
        from boltzflow.molecules import MoleculeError, load_molecule
    except ImportError:
        return
    for name, system in config["systems"].items():
        if system["type"] != "molecule":
            continue
        try:
            load_molecule(system["pdb"], system["forcefield"], system["constraints"])
        except MoleculeError as error:
            message = str(error).replace("molecule.", f"systems.{name}.", 1)
            sys.exit(f"boltzflow: invalid config: {message}")


check_molecules_with_openmm()


def systems_of_type(kind):
    """A wildcard pattern for the systems of one type (one that matches nothing if there are none)."""
    names = [name for name, system in config["systems"].items() if system["type"] == kind]
    return "|".join(names) if names else "(?!)"


#: Every estimator with the rules whose CPU time it costs (beyond the MD): its samples file is
#: samples/{estimator}.nc and its estimates analysis/estimates_{estimator}.nc.
ESTIMATOR_RULES = {
    "flow": ["train_flow", "sample_flow"],
    "score_exact": ["train_score", "sample_score_exact"],
    "score_hutchinson": ["train_score", "sample_score_hutchinson"],
    "score_perturbation": ["train_score", "sample_score_perturbation"],
    "score_perturbation_multistep": ["train_score", "sample_score_perturbation_multistep"],
    "flow_smc": ["train_flow", "smc_flow"],
    "score_smc": ["train_score", "smc_score"],
    "flow_mcmc": ["train_flow", "sample_flow", "flow_mcmc"],
}
ESTIMATORS = list(ESTIMATOR_RULES)
#: Estimators whose summary also shows the unweighted model ({estimator}_raw).
RAW_ESTIMATORS = ("flow", "score_exact")


def enabled_estimators(system_name):
    switches = config["systems"][system_name]["estimators"]
    return [name for name in ESTIMATORS if switches[name]]


TOY_SYSTEMS = systems_of_type("toy2d")
MOLECULE_SYSTEMS = systems_of_type("molecule")


wildcard_constraints:
    system="|".join(config["systems"]),
    temperature=r"[0-9]+(\.[0-9]+)?",
    estimator="|".join(ESTIMATORS),
    likelihood="exact|hutchinson|perturbation|perturbation_multistep",
    generative="flow|score",


def md_files(wildcards):
    temperatures = config["systems"][wildcards.system]["temperatures"]
    return [
        f"results/{wildcards.system}/md/{temperature_label(t)}K.nc" for t in temperatures
    ]


def target_md_file(wildcards):
    return md_files(wildcards)[0]


def md_benchmarks(wildcards):
    """Benchmark files of every job that produced the MD samples (the MBAR estimate's cost)."""
    system = config["systems"][wildcards.system]
    labels = [temperature_label(t) for t in system["temperatures"]]
    folder = f"results/{wildcards.system}/benchmarks"
    if system["type"] == "molecule":
        return [f"{folder}/replica_exchange.tsv"] + [
            f"{folder}/replica_state_{label}K.tsv" for label in labels
        ]
    return [f"{folder}/md_{label}K.tsv" for label in labels]


def molecule_pdb(wildcards):
    return config["systems"][wildcards.system]["pdb"]


def estimate_files(wildcards):
    return [f"results/{wildcards.system}/analysis/estimates_{name}.nc"
            for name in enabled_estimators(wildcards.system)]


def estimator_benchmarks(wildcards):
    """Benchmark files of the rules behind every enabled estimator (their CPU cost in the summary)."""
    return sorted({path for paths in estimator_costs(wildcards).values() for path in paths})


def estimator_costs(wildcards):
    """Per estimator, the benchmark files whose CPU seconds it costs (the raw model: without reweighting)."""
    folder = f"results/{wildcards.system}/benchmarks"
    costs = {}
    for name in enabled_estimators(wildcards.system):
        model = [f"{folder}/{rule}.tsv" for rule in ESTIMATOR_RULES[name]]
        costs[name] = model + [f"{folder}/reweight_{name}.tsv"]
        if name in RAW_ESTIMATORS:
            costs[f"{name}_raw"] = model
    return costs


def _weighted_estimators(system_name):
    """Enabled estimators with importance weights (MCMC states are equally weighted)."""
    return [name for name in enabled_estimators(system_name) if name != "flow_mcmc"]


def weighted_samples_files(wildcards):
    return [f"results/{wildcards.system}/samples/{name}.nc" for name in _weighted_estimators(wildcards.system)]


def weighted_estimate_files(wildcards):
    return [f"results/{wildcards.system}/analysis/estimates_{name}.nc"
            for name in _weighted_estimators(wildcards.system)]


def smc_model_file(wildcards):
    return f"results/{wildcards.system}/models/{wildcards.generative}.pt"


def all_outputs():
    outputs = []
    for system in config["systems"]:
        estimators = enabled_estimators(system)
        figures = ["free_energy_surfaces", "free_energy_profiles", "cost"]
        if any(name != "flow_mcmc" for name in estimators):
            figures.append("log_weights")
        if any(name.startswith("flow") for name in estimators):
            figures.append("training")
        if "flow" in estimators or "flow_mcmc" in estimators:  # the figure draws the flow's own samples
            figures.append("energy_distributions")
        if any(name.startswith("score") for name in estimators):
            figures.append("score_training")
        outputs += [f"results/{system}/summary.nc", f"results/{system}/summary.csv"]
        outputs += [f"results/{system}/figures/{name}.png" for name in figures]
    return outputs


# Each stage gets only the config keys it depends on, through params:, so that Snakemake reruns
# exactly the stages that a change affects (a flow setting never reruns MD).


def _system(wildcards):
    return config["systems"][wildcards.system]


def md_params(wildcards):
    system = _system(wildcards)
    params = {
        "type": system["type"],
        "energy": system["energy"],
        "temperatures": [float(wildcards.temperature)],
        "md": system["md"],
    }
    # Walkers start uniformly in the bounds box, or in the box the states span without bounds.
    if "bounds" in system:
        params["bounds"] = system["bounds"]
    else:
        params["states"] = system["states"]
    return params


#: The keys that define a system's target density (its energy), by type.
TARGET_KEYS = {
    "toy2d": ["type", "energy"],
    "molecule": ["type", "pdb", "forcefield", "constraints"],
}
#: The keys that define its CVs and states, by type.
CV_KEYS = {
    "toy2d": ["states", "bounds"],
    "molecule": ["cvs", "cv_units", "states"],
}


def _target(system, temperatures):
    params = {key: system[key] for key in TARGET_KEYS[system["type"]]}
    params["temperatures"] = temperatures
    return params


def _cvs(system):
    return {key: system[key] for key in CV_KEYS[system["type"]] if key in system}


def replica_exchange_params(wildcards):
    system = _system(wildcards)
    return {**_target(system, system["temperatures"]), "md": system["md"]}


def replica_split_params(wildcards):
    system = _system(wildcards)
    return {**_target(system, system["temperatures"]), **_cvs(system)}


def mbar_params(wildcards):
    system = _system(wildcards)
    params = {**_target(system, system["temperatures"]), **_cvs(system)}
    params["bins"] = system["analysis"]["bins"]
    return params


def model_params(wildcards):
    """The target (energy at the target temperature) that flow training and sampling see."""
    system = _system(wildcards)
    params = _target(system, system["temperatures"][:1])
    if system["type"] == "molecule":
        params.update(_cvs(system))  # the ESS monitor during training reports state populations
    return params


def flow_params(wildcards):
    return _system(wildcards)["flow"]


def sampling_params(wildcards):
    return _system(wildcards)["sampling"]


def score_params(wildcards):
    return _system(wildcards)["score"]


#: The score_sampling keys every likelihood estimator uses; each adds its own probe count.
SCORE_SAMPLING_KEYS = ["n_samples", "ode_steps", "batch_size", "seed", "device"]
PROBE_KEYS = {"exact": [], "hutchinson": ["hutchinson_probes"], "perturbation": ["perturbation_probes"],
              "perturbation_multistep": ["perturbation_probes"]}


def score_sampling_params(wildcards):
    """Only the keys of this estimator: a change of Hutchinson probes does not rerun flow perturbation."""
    block = _system(wildcards)["score_sampling"]
    return {key: block[key] for key in SCORE_SAMPLING_KEYS + PROBE_KEYS[wildcards.likelihood]}


def smc_params(wildcards):
    """The smc block, plus for a score model its likelihood estimator's ODE settings."""
    system = _system(wildcards)
    params = {key: value for key, value in system["smc"].items() if key != "score_likelihood"}
    if wildcards.generative == "score":
        likelihood = system["smc"]["score_likelihood"]
        sampling = system["score_sampling"]
        params.update(likelihood=likelihood, ode_steps=sampling["ode_steps"], device=sampling["device"],
                      probes=sampling["perturbation_probes"] if likelihood.startswith("perturbation") else 1)
    else:
        params["device"] = system["sampling"]["device"]
    return params


def mcmc_params(wildcards):
    return _system(wildcards)["mcmc"]


def reweight_params(wildcards):
    system = _system(wildcards)
    params = {
        "system": {**_target(system, system["temperatures"][:1]), **_cvs(system)},
        "bootstrap": system["analysis"]["bootstrap"],
        "seed": system["analysis"]["seed"],
        "trim_fraction": system["analysis"]["trim_fraction"],
    }
    if hasattr(wildcards, "estimator"):
        params["include_raw"] = wildcards.estimator in RAW_ESTIMATORS
    return params


def figure_params(wildcards):
    """The style only: a figure that does not clip at max_kt does not rerun when it changes."""
    return {"style": config["figures"]["style"]}


def surface_figure_params(wildcards):
    return {"style": config["figures"]["style"], "max_kt": config["figures"]["max_kt"]}
