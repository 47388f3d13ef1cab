# ---------------------------------------------------------------- MBAR reference over the temperature ladder


rule mbar:
    """MBAR over the temperature ladder: the reference free energies, profiles and surface."""
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
    """Importance-reweighted estimates of one estimator, with bootstrap errors."""
    input:
        samples="results/{system}/samples/{estimator}.nc",
        observables="results/{system}/analysis/mbar_observables.nc",
    output:
        estimates="results/{system}/analysis/estimates_{estimator}.nc",
    params:
        settings=reweight_params,
    log:
        "results/{system}/logs/reweight_{estimator}.log",
    benchmark:
        "results/{system}/benchmarks/reweight_{estimator}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../workflow/scripts/reweight.py"


rule ladder:
    """Reduced free energies f(T) over the ladder from a temperature-conditioned model's samples."""
    input:
        samples="results/{system}/samples/{estimator}_temperatures.nc",
    output:
        ladder="results/{system}/analysis/ladder_{estimator}.nc",
    params:
        analysis=ladder_analysis_params,
    log:
        "results/{system}/logs/ladder_{estimator}.log",
    benchmark:
        "results/{system}/benchmarks/ladder_{estimator}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../workflow/scripts/ladder.py"


# ---------------------------------------------------------------- the exact answer of 2D systems


rule quadrature:
    """The exact state free energies, ln Z, profiles and surface of a 2D system by quadrature."""
    input:
        observables="results/{system}/analysis/mbar_observables.nc",
    output:
        estimates="results/{system}/analysis/estimates_quadrature.nc",
    params:
        settings=quadrature_params,
    log:
        "results/{system}/logs/quadrature.log",
    benchmark:
        "results/{system}/benchmarks/quadrature.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../workflow/scripts/quadrature.py"


# ---------------------------------------------------------------- summary: every estimator against MBAR


rule summary:
    """Every estimator against the MBAR reference: summary.nc/.csv, profiles and surfaces."""
    input:
        observables="results/{system}/analysis/mbar_observables.nc",
        estimates=estimate_files,
        md_benchmarks=md_benchmarks,
        mbar_benchmark="results/{system}/benchmarks/mbar.tsv",
        estimator_benchmarks=estimator_benchmarks,
    output:
        summary="results/{system}/summary.nc",
        table="results/{system}/summary.csv",
        profiles="results/{system}/analysis/fes_profiles.nc",
        surface="results/{system}/analysis/fes_surface.nc",
    params:
        settings=reweight_params,
        costs=estimator_costs,
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
