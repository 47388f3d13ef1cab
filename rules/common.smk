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


TOY_SYSTEMS = systems_of_type("toy2d")
MOLECULE_SYSTEMS = systems_of_type("molecule")


wildcard_constraints:
    system="|".join(config["systems"]),
    temperature=r"[0-9]+(\.[0-9]+)?",
    model="flow",


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


def all_outputs():
    figures = ["free_energy_surfaces", "free_energy_profiles", "log_weights", "training",
               "energy_distributions"]
    outputs = []
    for system in config["systems"]:
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


def reweight_params(wildcards):
    system = _system(wildcards)
    return {
        "system": {**_target(system, system["temperatures"][:1]), **_cvs(system)},
        "bootstrap": system["analysis"]["bootstrap"],
        "seed": system["analysis"]["seed"],
        "trim_fraction": system["analysis"]["trim_fraction"],
    }


def figure_params(wildcards):
    """The style only: a figure that does not clip at max_kt does not rerun when it changes."""
    return {"style": config["figures"]["style"]}


def surface_figure_params(wildcards):
    return {"style": config["figures"]["style"], "max_kt": config["figures"]["max_kt"]}
