# ---------------------------------------------------------------- flow: maximum likelihood on target-temperature MD (or annealed)


rule train_flow:
    """Train the flow (a Boltzmann generator for molecules) on target-temperature MD (or, annealing, from the
    hottest temperature's MD down the ladder)."""
    input:
        md=target_md_file,
        annealing=annealing_md_files,
    output:
        model="results/{system}/models/flow.pt",
        curves="results/{system}/models/flow_training.nc",
    params:
        system=model_params,
        flow=flow_params,
    log:
        "results/{system}/logs/train_flow.log",
    benchmark:
        "results/{system}/benchmarks/train_flow.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=0,
    script:
        "../workflow/scripts/train_flow.py"


# ---------------------------------------------------------------- temperature-conditioned flow: MD of the whole ladder


rule train_flow_ladder:
    """Train one temperature-conditioned flow on the MD of every ladder temperature (flow block + flow_ladder)."""
    input:
        md=target_md_file,
        ladder=ladder_md_files,
    output:
        model="results/{system}/models/flow_ladder.pt",
        curves="results/{system}/models/flow_ladder_training.nc",
    params:
        system=ladder_model_params,
        flow=ladder_flow_params,
    log:
        "results/{system}/logs/train_flow_ladder.log",
    benchmark:
        "results/{system}/benchmarks/train_flow_ladder.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=180,
        gpu=0,
    script:
        "../workflow/scripts/train_flow.py"


# ---------------------------------------------------------------- score model: denoising score matching on MD


rule train_score:
    """Train the score model by denoising score matching on target-temperature MD."""
    input:
        md=target_md_file,
    output:
        model="results/{system}/models/score.pt",
        curves="results/{system}/models/score_training.nc",
    params:
        system=model_params,
        score=score_params,
    log:
        "results/{system}/logs/train_score.log",
    benchmark:
        "results/{system}/benchmarks/train_score.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=0,
    script:
        "../workflow/scripts/train_score.py"
