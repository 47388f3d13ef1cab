# ---------------------------------------------------------------- MBAR reference over the temperature ladder


rule mbar:
    input:
        md=md_files,
    output:
        ladder="results/{system}/analysis/mbar.nc",
        observables="results/{system}/analysis/mbar_observables.nc",
    params:
        system=mbar_params,
    log:
        "results/{system}/logs/mbar.log",
    benchmark:
        "results/{system}/benchmarks/mbar.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../workflow/scripts/mbar.py"


# ---------------------------------------------------------------- importance reweighting of model samples


rule reweight:
    input:
        samples="results/{system}/samples/{model}.nc",
        observables="results/{system}/analysis/mbar_observables.nc",
    output:
        estimates="results/{system}/analysis/estimates_{model}.nc",
    params:
        settings=reweight_params,
    log:
        "results/{system}/logs/reweight_{model}.log",
    benchmark:
        "results/{system}/benchmarks/reweight_{model}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../workflow/scripts/reweight.py"


# ---------------------------------------------------------------- summary: every estimator against MBAR


rule summary:
    input:
        observables="results/{system}/analysis/mbar_observables.nc",
        estimates="results/{system}/analysis/estimates_flow.nc",
        md_benchmarks=md_benchmarks,
        mbar_benchmark="results/{system}/benchmarks/mbar.tsv",
        train_benchmark="results/{system}/benchmarks/train_flow.tsv",
        sample_benchmark="results/{system}/benchmarks/sample_flow.tsv",
        reweight_benchmark="results/{system}/benchmarks/reweight_flow.tsv",
    output:
        summary="results/{system}/summary.nc",
        table="results/{system}/summary.csv",
        profiles="results/{system}/analysis/fes_profiles.nc",
        surface="results/{system}/analysis/fes_surface.nc",
    params:
        settings=reweight_params,
    log:
        "results/{system}/logs/summary.log",
    benchmark:
        "results/{system}/benchmarks/summary.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow/scripts/summary.py"
