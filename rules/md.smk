# ---------------------------------------------------------------- MD: Langevin walkers at one temperature


rule md:
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
