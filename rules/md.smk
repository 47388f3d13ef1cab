# ---------------------------------------------------------------- MD: Langevin walkers at one temperature


rule md:
    """Langevin MD of a toy system's walkers at one temperature of the ladder."""
    wildcard_constraints:
        system=LANGEVIN_SYSTEMS,
    output:
        samples="results/{system}/md/{temperature}K.nc",
    params:
        system=md_params,
    log:
        "results/{system}/logs/md_{temperature}K.log",
    benchmark:
        "results/{system}/benchmarks/md_{temperature}K.tsv"
    conda:
        "../envs/md.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    script:
        "../workflow/scripts/md.py"


# ---------------------------------------------------------------- MD: replica exchange of a molecule over the ladder


# md.runs independent runs, one job each, so that Snakemake runs them in parallel over the cores.
rule replica_exchange:
    """One independent temperature replica exchange run of a molecule over the whole ladder."""
    wildcard_constraints:
        system=REPLICA_EXCHANGE_SYSTEMS,
        run=r"[1-9][0-9]*",
    input:
        pdb=molecule_pdb,
    output:
        replicas="results/{system}/md/replica_exchange_run{run}.nc",
    # The molecule's MD is the longest chain of the default run: start its runs first, side by side.
    priority: 10
    params:
        system=replica_exchange_params,
    log:
        "results/{system}/logs/replica_exchange_run{run}.log",
    benchmark:
        "results/{system}/benchmarks/replica_exchange_run{run}.tsv"
    conda:
        "../envs/md.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
    script:
        "../workflow/scripts/replica_exchange.py"


# One temperature of the runs in the per-temperature MD contract, plus its AMBER NetCDF trajectory.
rule replica_state:
    """One temperature of the replica exchange runs, pooled, as MD samples and an AMBER trajectory."""
    wildcard_constraints:
        system=REPLICA_EXCHANGE_SYSTEMS,
    input:
        replicas=replica_exchange_runs,
        pdb=molecule_pdb,
    output:
        samples="results/{system}/md/{temperature}K.nc",
        trajectory="results/{system}/md/trajectories/{temperature}K.nc",
    params:
        system=replica_split_params,
    log:
        "results/{system}/logs/replica_state_{temperature}K.log",
    benchmark:
        "results/{system}/benchmarks/replica_state_{temperature}K.tsv"
    conda:
        "../envs/md.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../workflow/scripts/replica_state.py"


# ---------------------------------------------------------------- MD: trajectory files a user already has


rule import_md:
    """One temperature of MD a user already has: its trajectory files, energies recomputed, as MD samples."""
    wildcard_constraints:
        system=TRAJECTORY_SYSTEMS,
    input:
        trajectories=md_trajectory_files,
        pdb=molecule_pdb,
    output:
        samples="results/{system}/md/{temperature}K.nc",
    params:
        system=import_md_params,
    log:
        "results/{system}/logs/import_md_{temperature}K.log",
    benchmark:
        "results/{system}/benchmarks/import_md_{temperature}K.tsv"
    conda:
        "../envs/md.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../workflow/scripts/import_md.py"
