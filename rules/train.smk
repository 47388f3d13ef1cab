# ---------------------------------------------------------------- flow: maximum likelihood on target-temperature MD


rule train_flow:
    input:
        md=target_md_file,
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
