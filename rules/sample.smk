# ---------------------------------------------------------------- sampling: flow samples with ln q and u


rule sample_flow:
    """Draw flow samples with ln q and the reduced energy."""
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


rule sample_flow_ladder:
    """Draw samples of the temperature-conditioned flow at the target and at every ladder temperature."""
    input:
        model="results/{system}/models/flow_ladder.pt",
    output:
        samples="results/{system}/samples/flow_ladder.nc",
        temperatures="results/{system}/samples/flow_ladder_temperatures.nc",
    params:
        system=ladder_model_params,
        sampling=ladder_sampling_params,
    log:
        "results/{system}/logs/sample_flow_ladder.log",
    benchmark:
        "results/{system}/benchmarks/sample_flow_ladder.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=0,
    script:
        "../workflow/scripts/sample_flow.py"


# ---------------------------------------------------------------- score model: probability-flow ODE samples,
# with log q by one estimator each (exact, hutchinson, perturbation, perturbation_multistep)


rule sample_score:
    """Probability-flow ODE samples of the score model, ln q by one likelihood estimator."""
    input:
        model="results/{system}/models/score.pt",
    output:
        samples="results/{system}/samples/score_{likelihood}.nc",
    params:
        system=score_sampler_params,
        sampling=score_sampling_params,
    log:
        "results/{system}/logs/sample_score_{likelihood}.log",
    benchmark:
        "results/{system}/benchmarks/sample_score_{likelihood}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=0,
    script:
        "../workflow/scripts/sample_score.py"


# ---------------------------------------------------------------- SMC from a model (flow or score) to the target


rule smc:
    """Sequential Monte Carlo from a trained model (flow or score) to the target."""
    input:
        model=smc_model_file,
    output:
        samples="results/{system}/samples/{generative}_smc.nc",
    params:
        system=score_sampler_params,
        smc=smc_params,
    log:
        "results/{system}/logs/smc_{generative}.log",
    benchmark:
        "results/{system}/benchmarks/smc_{generative}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=0,
    script:
        "../workflow/scripts/smc.py"


# ---------------------------------------------------------------- independence MH with the flow as proposal


rule flow_mcmc:
    """Independence Metropolis-Hastings with the flow's samples as proposals."""
    input:
        samples="results/{system}/samples/flow.nc",
    output:
        samples="results/{system}/samples/flow_mcmc.nc",
    params:
        system=model_params,
        mcmc=mcmc_params,
    log:
        "results/{system}/logs/flow_mcmc.log",
    benchmark:
        "results/{system}/benchmarks/flow_mcmc.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../workflow/scripts/flow_mcmc.py"


# ---------------------------------------------------------------- a molecule's samples as AMBER trajectories


rule sample_trajectories:
    """A molecule's model samples as AMBER trajectories: every sample, and a weight-resampled ensemble."""
    wildcard_constraints:
        system=ATOMISTIC_SYSTEMS,
    input:
        samples="results/{system}/samples/{estimator}.nc",
        pdb=molecule_pdb,
    output:
        trajectory="results/{system}/samples/{estimator}_trajectory.nc",
        resampled="results/{system}/samples/{estimator}_resampled.nc",
    params:
        settings=sample_trajectory_params,
    log:
        "results/{system}/logs/sample_trajectories_{estimator}.log",
    benchmark:
        "results/{system}/benchmarks/sample_trajectories_{estimator}.tsv"
    conda:
        "../envs/md.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../workflow/scripts/sample_trajectories.py"
