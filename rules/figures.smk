# ---------------------------------------------------------------- figures, tagged for the HTML report


rule figure_free_energy_surfaces:
    """Figure: free-energy surface over the two CVs, per estimator."""
    input:
        surface="results/{system}/analysis/fes_surface.nc",
        summary="results/{system}/summary.nc",
    output:
        report(
            "results/{system}/figures/free_energy_surfaces.png",
            caption="../report/free_energy_surfaces.rst",
            category="{system}",
            subcategory="free energies",
        ),
    params:
        figures=surface_figure_params,
    log:
        "results/{system}/logs/figure_free_energy_surfaces.log",
    benchmark:
        "results/{system}/benchmarks/figure_free_energy_surfaces.tsv"
    conda:
        "../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow/scripts/figure_free_energy_surfaces.py"


rule figure_free_energy_profiles:
    """Figure: free-energy profiles along each CV, one panel per estimator beside the references."""
    input:
        profiles="results/{system}/analysis/fes_profiles.nc",
        summary="results/{system}/summary.nc",
    output:
        report(
            "results/{system}/figures/free_energy_profiles.png",
            caption="../report/free_energy_profiles.rst",
            category="{system}",
            subcategory="free energies",
        ),
    params:
        figures=profile_figure_params,
    log:
        "results/{system}/logs/figure_free_energy_profiles.log",
    benchmark:
        "results/{system}/benchmarks/figure_free_energy_profiles.tsv"
    conda:
        "../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow/scripts/figure_free_energy_profiles.py"


rule figure_log_weights:
    """Figure: log importance weights of every weighted estimator."""
    input:
        samples=weighted_samples_files,
        estimates=weighted_estimate_files,
        summary="results/{system}/summary.nc",
    output:
        report(
            "results/{system}/figures/log_weights.png",
            caption="../report/log_weights.rst",
            category="{system}",
            subcategory="diagnostics",
        ),
    params:
        figures=figure_params,
    log:
        "results/{system}/logs/figure_log_weights.log",
    benchmark:
        "results/{system}/benchmarks/figure_log_weights.tsv"
    conda:
        "../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow/scripts/figure_log_weights.py"


rule figure_training:
    """Figure: flow training curves and ESS over training."""
    input:
        curves="results/{system}/models/flow_training.nc",
    output:
        report(
            "results/{system}/figures/training.png",
            caption="../report/training.rst",
            category="{system}",
            subcategory="diagnostics",
        ),
    params:
        figures=figure_params,
        estimator="flow",
    log:
        "results/{system}/logs/figure_training.log",
    benchmark:
        "results/{system}/benchmarks/figure_training.tsv"
    conda:
        "../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow/scripts/figure_training.py"


rule figure_training_flow_ladder:
    """Figure: the temperature-conditioned flow's training curves, and ESS at the target over training."""
    input:
        curves="results/{system}/models/flow_ladder_training.nc",
    output:
        report(
            "results/{system}/figures/training_flow_ladder.png",
            caption="../report/training_flow_ladder.rst",
            category="{system}",
            subcategory="diagnostics",
        ),
    params:
        figures=figure_params,
        estimator="flow_ladder",
    log:
        "results/{system}/logs/figure_training_flow_ladder.log",
    benchmark:
        "results/{system}/benchmarks/figure_training_flow_ladder.tsv"
    conda:
        "../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow/scripts/figure_training.py"


rule figure_energy_distributions:
    """Figure: potential energies of MD, flow and reweighted flow."""
    input:
        md=target_md_file,
        samples="results/{system}/samples/flow.nc",
    output:
        report(
            "results/{system}/figures/energy_distributions.png",
            caption="../report/energy_distributions.rst",
            category="{system}",
            subcategory="diagnostics",
        ),
    params:
        figures=figure_params,
    log:
        "results/{system}/logs/figure_energy_distributions.log",
    benchmark:
        "results/{system}/benchmarks/figure_energy_distributions.tsv"
    conda:
        "../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow/scripts/figure_energy_distributions.py"


rule figure_cost:
    """Figure: CPU seconds against ΔF error and ESS per estimator, with and without the training MD."""
    input:
        summary="results/{system}/summary.nc",
        training_md_benchmarks=training_md_benchmarks,
        md_benchmarks=md_benchmarks,
    output:
        report(
            "results/{system}/figures/cost.png",
            caption="../report/cost.rst",
            category="{system}",
            subcategory="free energies",
        ),
    params:
        figures=figure_params,
        flow_anneals=flow_anneals,
    log:
        "results/{system}/logs/figure_cost.log",
    benchmark:
        "results/{system}/benchmarks/figure_cost.tsv"
    conda:
        "../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow/scripts/figure_cost.py"


rule figure_score_training:
    """Figure: the score model's loss terms, each on its own axis."""
    input:
        curves="results/{system}/models/score_training.nc",
    output:
        report(
            "results/{system}/figures/score_training.png",
            caption="../report/score_training.rst",
            category="{system}",
            subcategory="diagnostics",
        ),
    params:
        figures=figure_params,
    log:
        "results/{system}/logs/figure_score_training.log",
    benchmark:
        "results/{system}/benchmarks/figure_score_training.tsv"
    conda:
        "../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow/scripts/figure_score_training.py"


rule figure_ladder_free_energies:
    """Figure: f(T) over the ladder from each temperature-conditioned model against MBAR, and its ESS."""
    input:
        mbar="results/{system}/analysis/mbar.nc",
        ladders=ladder_estimate_files,
    output:
        report(
            "results/{system}/figures/ladder_free_energies.png",
            caption="../report/ladder_free_energies.rst",
            category="{system}",
            subcategory="free energies",
        ),
    params:
        figures=figure_params,
    log:
        "results/{system}/logs/figure_ladder_free_energies.log",
    benchmark:
        "results/{system}/benchmarks/figure_ladder_free_energies.tsv"
    conda:
        "../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow/scripts/figure_ladder_free_energies.py"


rule summary_html:
    """Report table: the summary, one row per estimator and state, unreliable rows marked."""
    input:
        summary="results/{system}/summary.nc",
    output:
        report(
            "results/{system}/summary.html",
            caption="../report/summary.rst",
            category="{system}",
            subcategory="free energies",
        ),
    log:
        "results/{system}/logs/summary_html.log",
    benchmark:
        "results/{system}/benchmarks/summary_html.tsv"
    conda:
        "../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow/scripts/summary_html.py"
