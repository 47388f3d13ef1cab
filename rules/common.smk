import sys
from pathlib import Path

# The science package lives in src/; the Snakefile only needs its dependency-free config checks.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from boltzflow.config import ConfigError, load_schema, temperature_label, validate_config


try:
    validate_config(config, load_schema(Path(workflow.basedir) / "config" / "schema.yaml"))
except ConfigError as error:
    sys.exit(f"boltzflow: invalid config: {error}")


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
    temperatures = config["systems"][wildcards.system]["temperatures"]
    return [
        f"results/{wildcards.system}/benchmarks/md_{temperature_label(t)}K.tsv"
        for t in temperatures
    ]


def all_outputs():
    figures = ["free_energy_surfaces", "free_energy_profiles", "log_weights", "training"]
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


def mbar_params(wildcards):
    system = _system(wildcards)
    keys = ["type", "energy", "temperatures", "states", "bounds"]
    params = {key: system[key] for key in keys if key in system}
    params["bins"] = system["analysis"]["bins"]
    return params


def model_params(wildcards):
    """The target (energy at the target temperature) that flow training and sampling see."""
    system = _system(wildcards)
    return {
        "type": system["type"],
        "energy": system["energy"],
        "temperatures": system["temperatures"][:1],
    }


def flow_params(wildcards):
    return _system(wildcards)["flow"]


def sampling_params(wildcards):
    return _system(wildcards)["sampling"]


def reweight_params(wildcards):
    system = _system(wildcards)
    return {
        "system": {"type": system["type"], "energy": system["energy"],
                   "temperatures": system["temperatures"][:1], "states": system["states"]},
        "bootstrap": system["analysis"]["bootstrap"],
        "seed": system["analysis"]["seed"],
    }


def figure_params(wildcards):
    """The style only: a figure that does not clip at max_kt does not rerun when it changes."""
    return {"style": config["figures"]["style"]}


def surface_figure_params(wildcards):
    return {"style": config["figures"]["style"], "max_kt": config["figures"]["max_kt"]}
