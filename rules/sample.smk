# ---------------------------------------------------------------- sampling: flow samples with ln q and u


rule sample_flow:
    input:
        model="results/{system}/models/flow.pt",
    output:
        samples="results/{system}/samples/flow.nc",
    params:
        system=model_params,
        sampling=sampling_params,
    log:
        "results/{system}/logs/sample_flow.log",
    benchmark:
        "results/{system}/benchmarks/sample_flow.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=0,
    script:
        "../workflow/scripts/sample_flow.py"
