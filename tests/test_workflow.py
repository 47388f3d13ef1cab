"""End to end: config/test.yaml through the real Snakemake workflow.

Toy systems are checked against 2D quadrature; alanine dipeptide against its own MBAR reference, and its
trajectories against mdtraj.
"""

import math

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from boltzflow.systems import toy_system_from_config
from workflow_helpers import ROOT, copy_workflow, merged_config, snakemake

pytestmark = pytest.mark.slow

TOY_SYSTEMS = ["mueller_brown", "double_well"]
SYSTEMS = [*TOY_SYSTEMS, "alanine_dipeptide"]
FIGURES = ["free_energy_surfaces", "free_energy_profiles", "log_weights", "training", "energy_distributions",
           "cost", "score_training", "ladder_free_energies", "training_flow_ladder"]
MODEL_ESTIMATORS = ["flow", "flow_raw", "score_exact", "score_exact_raw", "score_hutchinson", "score_perturbation",
                    "score_perturbation_multistep", "flow_ladder", "flow_smc", "score_smc", "flow_mcmc"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("workflow"))
    result = snakemake(workdir, "--cores", "2", "--configfile", "config/test.yaml")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    return workdir


@pytest.fixture(scope="module")
def config():
    return merged_config(ROOT / "config/config.yaml", ROOT / "config/test.yaml")


#: The quadrature grid of the target temperature (x from, x to, y from, y to, in nm) and its spacing.
QUADRATURE_BOX, QUADRATURE_STEP = (-3.5, 3.0, -2.5, 4.0), 0.0025


def quadrature_delta_f(system_config: dict, name: str) -> np.ndarray:
    """ΔF_s = -ln(P_s / P_ref) in kT at the target temperature by the midpoint rule on a fine grid."""
    return _quadrature(system_config, name)[0]


def quadrature_log_z(system_config: dict, name: str, box=QUADRATURE_BOX, h=QUADRATURE_STEP) -> float:
    """ln Z = ln ∫ exp(-u) dx dy (x, y in nm) by the same midpoint rule."""
    return _quadrature(system_config, name, box, h)[1]


def _quadrature(system_config: dict, name: str, box=QUADRATURE_BOX, h=QUADRATURE_STEP):
    system = toy_system_from_config(name, system_config)
    x = torch.arange(box[0], box[1], h, dtype=torch.float64) + h / 2
    y = torch.arange(box[2], box[3], h, dtype=torch.float64) + h / 2
    grid = torch.stack(torch.meshgrid(x, y, indexing="ij"), dim=-1)
    u = system.reduced_energy(grid)
    u_min = float(u.min())
    u = u - u_min
    density = torch.exp(-u).numpy()
    cvs = {"x": grid[..., 0].numpy().ravel(), "y": grid[..., 1].numpy().ravel()}
    mass = np.array([density.ravel()[state.contains(cvs)].sum() for state in system.states])
    # The grid must hold the whole distribution for the probabilities to be right.
    edge = max(density[0].max(), density[-1].max(), density[:, 0].max(), density[:, -1].max())
    assert edge < 1e-9 * density.max()
    log_z = float(torch.log(torch.exp(-u).sum() * h * h)) - u_min
    return -np.log(mass / mass[0]), log_z


@pytest.mark.parametrize("system", TOY_SYSTEMS)
def test_state_free_energies_match_quadrature(run, config, system):
    truth = quadrature_delta_f(config["systems"][system], system)
    summary = xr.open_dataset(run / f"results/{system}/summary.nc")
    mbar = summary["delta_f"].sel(estimator="mbar").values
    flow = summary["delta_f"].sel(estimator="flow").values
    print(system, "quadrature", truth, "mbar", mbar, "flow", flow)
    # The pipeline's own quadrature (its grid, its domain) against this test's independent one.
    pipeline = summary["delta_f"].sel(estimator="quadrature").values
    np.testing.assert_allclose(pipeline, truth, atol=2e-3)
    log_z = float(summary["log_z"].sel(estimator="quadrature"))
    assert abs(log_z - quadrature_log_z(config["systems"][system], system)) < 2e-3
    assert np.all(np.abs(mbar - truth) < 0.05), (mbar, truth)
    assert np.all(np.abs(flow - truth) < 0.1), (flow, truth)
    assert summary["ess_fraction"].sel(estimator="flow") > 0.2


@pytest.mark.parametrize("system", SYSTEMS)
def test_output_contract(run, config, system):
    system_config = config["systems"][system]
    results = run / "results" / system
    ladder = xr.open_dataset(results / "analysis/mbar.nc")
    np.testing.assert_allclose(ladder["temperature"], system_config["temperatures"])
    assert ladder["temperature"].attrs["units"] == "K"
    assert ladder["f"].values[0] == 0.0 and np.all(np.isfinite(ladder["df"]))

    summary = xr.open_dataset(results / "summary.nc")
    estimators = [str(e) for e in summary["estimator"].values]
    switches = system_config["estimators"] if "estimators" in system_config else {}
    expected = [name for name in MODEL_ESTIMATORS if switches.get(name.removesuffix("_raw"), True)]
    references = ["mbar", "quadrature"] if system_config["type"] == "toy2d" else ["mbar"]
    assert estimators == [*references, *expected]
    assert [str(s) for s in summary["state"].values] == list(system_config["states"])
    for name, dims in {"delta_f": ("estimator", "state"), "delta_f_err": ("estimator", "state"),
                       "ess_fraction": ("estimator",), "ess_fraction_trimmed": ("estimator",),
                       "log_z": ("estimator",), "log_z_err": ("estimator",), "kl_divergence": ("estimator",),
                       "js_divergence": ("estimator",), "n_samples": ("estimator",),
                       "acceptance_rate": ("estimator",), "cpu_seconds": ("estimator",), "pareto_k": ("estimator",),
                       "n_dropped": ("estimator",), "reliable": ("estimator", "state"),
                       "unreliable_reason": ("estimator", "state"), "n_eff_state": ("estimator", "state"),
                       "n_distinct_state": ("estimator", "state"), "z_score": ("estimator", "state"),
                       "reference_delta_f_err": ("estimator", "state")}.items():
        assert summary[name].dims == dims
    flow = summary.sel(estimator="flow")
    assert 0 < flow["ess_fraction"] <= flow["ess_fraction_trimmed"] <= 1
    assert 0 <= flow["js_divergence"] <= np.log(2) and flow["kl_divergence"] >= 0
    assert np.all(summary["delta_f"].isel(state=0) == 0)
    assert math.isnan(summary["ess_fraction"].sel(estimator="mbar"))
    assert np.all(summary["cpu_seconds"] > 0)
    assert summary["delta_f"].attrs["units"] == "kT"

    table = (results / "summary.csv").read_text().splitlines()
    assert table[0].startswith("estimator,state,reliable,delta_f,delta_f_err,reference_delta_f,reference_delta_f_err")
    assert len(table) == 1 + len(estimators) * len(system_config["states"])

    cvs = list(system_config["cvs"]) if system_config["type"] == "molecule" else ["x", "y"]
    profiles = xr.open_dataset(results / "analysis/fes_profiles.nc")
    for cv in cvs:
        assert profiles[f"F_{cv}"].dims == ("estimator", cv) and profiles[f"dF_{cv}"].dims == ("estimator", cv)
        assert profiles[f"F_{cv}"].attrs["units"] == "kT"
        assert profiles[f"n_eff_{cv}"].dims == ("estimator", cv) and (profiles[f"n_eff_{cv}"] >= 0).all()
    surface = xr.open_dataset(results / "analysis/fes_surface.nc")
    assert surface["F_" + "".join(cvs)].dims == ("estimator", *cvs)
    assert surface["n_eff_" + "".join(cvs)].dims == ("estimator", *cvs)

    for path in results.rglob("*.nc"):
        if path.parent.name == "trajectories" or path.stem.endswith(("_trajectory", "_resampled")):
            continue  # AMBER NetCDF convention (read by mdtraj in its own test), not the boltzflow contract
        dataset = xr.open_dataset(path)
        assert dataset.attrs["boltzflow_version"] and dataset.attrs["config"].startswith("{"), path
        for name, variable in {**dataset.data_vars, **dataset.coords}.items():
            if variable.dtype.kind not in "OUS":
                assert {"units", "long_name"} <= set(variable.attrs), (path, name)

    ladder_figures = {"ladder_free_energies", "training_flow_ladder"}
    for figure in FIGURES:
        png = results / f"figures/{figure}.png"
        if figure in ladder_figures and not switches.get("flow_ladder", False):
            assert not png.exists()  # the temperature-conditioned flow is off here (schema default)
            continue
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert not list(results.rglob("*.tmp")), "a temporary file was left behind"


#: Estimators whose ΔF must match quadrature on the toy systems, with their tolerance in kT: the score
#: models use fewer samples than the flow, and SMC and MCMC have correlated samples (their bootstrap
#: errors resample particles or chains, see the README), hence the wider bands.
TOY_TOLERANCE = {"score_exact": 0.15, "score_hutchinson": 0.15, "score_perturbation": 0.2,
                 "score_perturbation_multistep": 0.2, "flow_ladder": 0.1, "flow_smc": 0.2, "score_smc": 0.25,
                 "flow_mcmc": 0.15}


@pytest.mark.parametrize("system", TOY_SYSTEMS)
def test_every_score_and_sampler_estimator_matches_quadrature(run, config, system):
    truth = quadrature_delta_f(config["systems"][system], system)
    summary = xr.open_dataset(run / f"results/{system}/summary.nc")
    for estimator, tolerance in TOY_TOLERANCE.items():
        values = summary["delta_f"].sel(estimator=estimator).values
        errors = summary["delta_f_err"].sel(estimator=estimator).values
        print(system, estimator, values, "±", errors, "ESS/N", float(summary["ess_fraction"].sel(estimator=estimator)))
        assert np.all(np.abs(values - truth) < np.maximum(tolerance, 3 * errors)), (estimator, values, truth)
    # SMC and MCMC report their Metropolis acceptance; MCMC has no Kish ESS (equal weights).
    for estimator in ("flow_smc", "score_smc", "flow_mcmc"):
        assert 0 < summary["acceptance_rate"].sel(estimator=estimator) <= 1
    assert math.isnan(summary["ess_fraction"].sel(estimator="flow_mcmc"))
    # The same model's samples: flow perturbation costs less CPU than the exact divergence only in many
    # dimensions; in 2D all the likelihood estimators agree on ln Z within their errors.
    # ln Z against quadrature: it checks the density's normalization (the standardization and base
    # Jacobians), which ΔF and ESS do not see. SMC's ln Z is unbiased for Z, not ln Z, hence a wider band.
    log_z_truth = quadrature_log_z(config["systems"][system], system)
    for estimator, tolerance in {"flow": 0.05, "flow_ladder": 0.05, "score_exact": 0.05, "score_hutchinson": 0.05,
                                 "score_perturbation": 0.05, "score_perturbation_multistep": 0.05,
                                 "flow_smc": 0.1, "score_smc": 0.1}.items():
        log_z = float(summary["log_z"].sel(estimator=estimator))
        error = float(summary["log_z_err"].sel(estimator=estimator))
        print(system, estimator, "ln Z", log_z, "±", error, "quadrature", log_z_truth)
        assert abs(log_z - log_z_truth) < max(tolerance, 3 * error), (estimator, log_z, log_z_truth)


@pytest.mark.parametrize("system", TOY_SYSTEMS)
def test_ladder_free_energies_match_quadrature_and_mbar_at_every_temperature(run, config, system):
    """The temperature-conditioned flow's f(T) (reduced, relative to the target, like mbar.nc) against the
    exact f(T) by quadrature, within 0.05 kT or 3σ, and against MBAR within 0.05 kT or 3 combined σ."""
    system_config = config["systems"][system]
    ladder = xr.open_dataset(run / f"results/{system}/analysis/ladder_flow_ladder.nc")
    mbar = xr.open_dataset(run / f"results/{system}/analysis/mbar.nc")
    temperatures = system_config["temperatures"]
    # The hot distributions are wider: a larger box, at a resolution the midpoint rule still resolves.
    log_z = np.array([quadrature_log_z({**system_config, "temperatures": [t]}, system, box=(-5, 4.5, -4, 5.5),
                                       h=0.004) for t in temperatures])
    truth = -(log_z - log_z[0])
    f, df = ladder["f"].values, ladder["df"].values
    print(system, "f", f, "±", df, "quadrature", truth, "MBAR", mbar["f"].values, "ESS/N", ladder["ess_fraction"].values)
    assert ladder["temperature"].values.tolist() == temperatures
    assert ladder["reliable"].values.all(), ladder["reason"].values
    assert np.all(np.abs(f - truth) < np.maximum(0.05, 3 * df))
    assert np.all(np.abs(f - mbar["f"].values) < np.maximum(0.05, 3 * np.hypot(df, mbar["df"].values)))


@pytest.mark.parametrize("system", SYSTEMS)
def test_no_estimate_is_confidently_wrong(run, system):
    """The product's promise: an estimate far from the reference (quadrature for toys, else MBAR) is marked
    unreliable. 'Far' is the issue's 0.25 kT + 2σ, widened to 3 combined σ: a CI-sized run must not fail
    by chance (0.3 % per estimate if the errors are right)."""
    summary = xr.open_dataset(run / f"results/{system}/summary.nc")
    reliable = summary["reliable"].astype(bool)
    deviation = abs(summary["delta_f"] - summary["reference_delta_f"])
    combined = np.hypot(summary["delta_f_err"], summary["reference_delta_f_err"])
    confidently_wrong = reliable & (deviation > 0.25 + 3 * combined)
    print(summary_table_text(summary))
    assert not confidently_wrong.any(), confidently_wrong.where(confidently_wrong, drop=True)
    # The unweighted models are biased by construction and always say so; a reason goes with every verdict.
    raw = [str(e) for e in summary["estimator"].values if str(e).endswith("_raw")]
    assert not reliable.sel(estimator=raw).any()
    reasons = summary["unreliable_reason"].values
    assert all(bool(r) != bool(ok) for r, ok in zip(reasons.ravel(), reliable.values.ravel()))


def summary_table_text(summary) -> str:
    table = summary[["reliable", "delta_f", "delta_f_err", "z_score", "pareto_k", "n_eff_state"]].to_dataframe()
    return table.to_string()


def test_alanine_dipeptide_flow_agrees_with_mbar(run):
    summary = xr.open_dataset(run / "results/alanine_dipeptide/summary.nc")
    mbar = summary.sel(estimator="mbar", state="phi_positive")
    flow = summary.sel(estimator="flow", state="phi_positive")
    print("ΔF(phi > 0): MBAR", float(mbar["delta_f"]), "±", float(mbar["delta_f_err"]),
          "flow", float(flow["delta_f"]), "±", float(flow["delta_f_err"]), "ESS/N", float(flow["ess_fraction"]))
    # The state is rare at 300 K (a few percent). MBAR over the replica-exchange ladder is deterministic
    # (OpenMM's Reference platform). Its error is scaled by the replica trajectories' statistical
    # inefficiency (about 170 frames here, so some 26 independent samples per temperature over two runs at
    # the CI size): about 1 kT, honest and large; the check is that it is finite and tells the state from nothing.
    assert 1.0 < mbar["delta_f"] < 8.0 and 0 < mbar["delta_f_err"] < 2.5
    # The flow is not: torch training differs across CPU models, and the CI-sized flow's ESS/N has been
    # seen anywhere from 0.3 % to 3.4 % (56 to 680 effective samples of 20,000). So nothing here depends on
    # how good the flow came out, only on what must hold for any flow that is honest about itself: its
    # own samples visit the state, the reweighted estimate has a positive error small enough to tell the
    # state from its neighbour (the worst seen is 1.6 kT), and it agrees with MBAR within three combined
    # standard errors (a 0.3 % false alarm if the errors were Gaussian and right; bootstrap errors at a low
    # ESS tend to be small, so more in practice). ESS is asserted only to be enough for a bootstrap error
    # to mean something.
    assert np.isfinite(summary["delta_f"].sel(estimator="flow_raw", state="phi_positive"))
    assert 0 < flow["delta_f_err"] < 2.5
    combined = np.hypot(mbar["delta_f_err"], flow["delta_f_err"])
    assert abs(flow["delta_f"] - mbar["delta_f"]) < 3 * combined
    assert flow["ess_fraction"] * flow["n_samples"] >= 20


def test_alanine_dipeptide_trajectories_load_in_mdtraj_with_the_right_dihedrals(run, config):
    import mdtraj

    results = run / "results/alanine_dipeptide"
    system_config = config["systems"]["alanine_dipeptide"]
    replicas = xr.open_dataset(results / "md/replica_exchange_run1.nc")
    acceptance = replicas["acceptance"].values
    assert acceptance.shape == (len(system_config["temperatures"]) - 1,)
    assert np.all((acceptance > 0.05) & (acceptance < 1))
    n_runs = system_config["md"]["runs"]
    for temperature in system_config["temperatures"]:
        samples = xr.open_dataset(results / f"md/{temperature:g}K.nc")
        # Every frame of every run, pooled.
        assert samples.sizes["sample"] == n_runs * replicas.sizes["frame"]
        np.testing.assert_array_equal(np.unique(samples["run"].values), np.arange(1, n_runs + 1))
        trajectory = mdtraj.load(str(results / f"md/trajectories/{temperature:g}K.nc"), top=str(ROOT / "data/alanine_dipeptide.pdb"))
        assert trajectory.n_atoms == 22 and trajectory.n_frames == samples.sizes["sample"]
        np.testing.assert_allclose(trajectory.xyz, samples["positions"].values, atol=1e-4)
        quads = np.array([system_config["cvs"][cv] for cv in ("phi", "psi")])
        dihedrals = np.degrees(mdtraj.compute_dihedrals(trajectory, quads))
        stored = samples["cv_values"].values
        difference = (dihedrals - stored + 180) % 360 - 180  # the same angle on the circle
        assert np.abs(difference).max() < 0.05
    # The model samples as trajectories: every sample, and the ensemble drawn by importance weight.
    samples = xr.open_dataset(results / "samples/flow.nc")
    top = str(ROOT / "data/alanine_dipeptide.pdb")
    every = mdtraj.load(str(results / "samples/flow_trajectory.nc"), top=top)
    index = every.time.astype(int)
    np.testing.assert_allclose(every.xyz, samples["positions"].values[index], atol=1e-4)
    resampled = mdtraj.load(str(results / "samples/flow_resampled.nc"), top=top)
    assert resampled.n_atoms == 22 and resampled.n_frames == 10000
    assert np.isfinite(samples["log_w"].values[resampled.time.astype(int)]).all()


def test_resampled_flow_trajectory_has_the_mbar_state_populations(run, config):
    # Issue 13's check as a user would do it: load the weight-resampled flow ensemble in mdtraj, measure phi
    # there, and compare the share of phi > 0 with MBAR's. The resampled frames carry the noise of the
    # importance weights (at most the Kish ESS distinct samples), so "within noise" is three combined
    # standard errors: MBAR's on the population, and the binomial one of the ESS.
    import mdtraj
    from scipy.special import expit

    results = run / "results/alanine_dipeptide"
    system_config = config["systems"]["alanine_dipeptide"]
    resampled = mdtraj.load(str(results / "samples/flow_resampled.nc"), top=str(ROOT / "data/alanine_dipeptide.pdb"))
    phi = np.degrees(mdtraj.compute_dihedrals(resampled, np.array([system_config["cvs"]["phi"]])))[:, 0]
    share = float(np.mean(phi >= 0))
    summary = xr.open_dataset(results / "summary.nc")
    mbar = summary.sel(estimator="mbar", state="phi_positive")
    # Two states: p(phi > 0) = 1 / (1 + exp(ΔF)), and its error by the chain rule.
    p_mbar = float(expit(-mbar["delta_f"]))
    p_mbar_err = p_mbar * (1 - p_mbar) * float(mbar["delta_f_err"])
    ess = float(summary["ess_fraction"].sel(estimator="flow") * summary["n_samples"].sel(estimator="flow"))
    noise = np.sqrt(p_mbar * (1 - p_mbar) / min(ess, resampled.n_frames))
    print(f"phi > 0: resampled flow {share:.4f}, MBAR {p_mbar:.4f} ± {p_mbar_err:.4f}, resampling noise {noise:.4f}")
    assert abs(share - p_mbar) < 3 * np.hypot(p_mbar_err, noise)


def test_a_target_runs_just_its_system(tmp_path):
    workdir = copy_workflow(tmp_path)
    # The target goes before --configfile, which takes every word after it as a config file.
    result = snakemake(workdir, "-n", "--cores", "2", "results/double_well/summary.nc",
                       "--configfile", "config/test.yaml")
    assert result.returncode == 0, result.stderr
    assert "double_well" in result.stdout and "mueller_brown" not in result.stdout


def _planned_jobs(output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    lines = output.split("Job stats:", 1)[1].splitlines()
    jobs = {}
    for line in lines[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


SUMMARY_FIGURES = {"summary", "summary_html", "figure_free_energy_surfaces", "figure_free_energy_profiles",
                   "figure_log_weights", "figure_cost", "all"}
LADDER_FLOW = {"train_flow_ladder", "sample_flow_ladder", "ladder", "figure_ladder_free_energies",
               "figure_training_flow_ladder"}
DOWNSTREAM_OF_FLOW = SUMMARY_FIGURES | LADDER_FLOW | {"train_flow", "sample_flow", "smc", "flow_mcmc", "reweight",
                                                      "figure_training", "figure_energy_distributions"}
DOWNSTREAM_OF_SCORE = SUMMARY_FIGURES | {"train_score", "sample_score", "smc", "reweight", "figure_score_training"}
DOWNSTREAM_OF_MD = DOWNSTREAM_OF_FLOW | DOWNSTREAM_OF_SCORE | {"mbar"}


FIGURES_ONLY = {"figure_free_energy_surfaces", "figure_free_energy_profiles", "figure_log_weights",
                "figure_training", "figure_energy_distributions", "figure_cost", "figure_score_training",
                "figure_ladder_free_energies", "figure_training_flow_ladder", "all"}


@pytest.mark.parametrize("change, expected", [
    ({"systems": {"double_well": {"flow": {"learning_rate": 0.002}}}}, DOWNSTREAM_OF_FLOW),
    # The temperature-conditioned flow's own keys rerun only it and what reads its samples.
    ({"systems": {"double_well": {"flow_ladder": {"hidden": 32}}}}, SUMMARY_FIGURES | LADDER_FLOW | {"reweight"}),
    ({"systems": {"double_well": {"sampling": {"n_samples": 30000}}}},
     DOWNSTREAM_OF_FLOW - {"train_flow", "train_flow_ladder", "figure_training", "figure_training_flow_ladder", "smc"}),
    # Exact job counts where a set of names could hide a sibling that should not rerun: a score setting
    # reruns the four probability-flow samplers and the score SMC (not the flow's), a probe count only
    # the Hutchinson sampler, an SMC setting both SMC runs.
    ({"systems": {"double_well": {"score": {"steps": 1000}}}},
     {**dict.fromkeys(DOWNSTREAM_OF_SCORE, 1), "sample_score": 4, "reweight": 5}),
    ({"systems": {"double_well": {"score_sampling": {"hutchinson_probes": 2}}}},
     dict.fromkeys(SUMMARY_FIGURES | {"sample_score", "reweight"}, 1)),
    ({"systems": {"double_well": {"smc": {"moves_per_level": 3}}}},
     {**dict.fromkeys(SUMMARY_FIGURES, 1), "smc": 2, "reweight": 2}),
    ({"systems": {"double_well": {"md": {"steps": 70000}}}}, DOWNSTREAM_OF_MD | {"md", "quadrature"}),
    # A molecule's model samples are also its AMBER trajectories (sample_trajectories).
    ({"systems": {"alanine_dipeptide": {"md": {"exchanges": 250}}}},
     (DOWNSTREAM_OF_MD - LADDER_FLOW) | {"replica_exchange", "replica_state", "sample_trajectories"}),
    ({"systems": {"alanine_dipeptide": {"sample_trajectories": {"resampled_frames": 500}}}},
     {"sample_trajectories": 7, "all": 1}),
    ({"systems": {"alanine_dipeptide": {"analysis": {"trim_fraction": 0.01}}}}, SUMMARY_FIGURES | {"reweight"}),
    # A reliability threshold reruns the verdicts, not the exact answer; the KL/JS sample count also the quadrature.
    ({"systems": {"double_well": {"analysis": {"max_pareto_k": 0.5}}}},
     SUMMARY_FIGURES | {"reweight", "ladder", "figure_ladder_free_energies"}),
    ({"systems": {"double_well": {"analysis": {"divergence_samples": 1000}}}}, SUMMARY_FIGURES | {"reweight", "quadrature"}),
    ({"figures": {"style": "whitegrid"}}, FIGURES_ONLY),
    ({"figures": {"max_kt": 8}}, {"figure_free_energy_surfaces", "all"}),
    ({"figures": {"min_bin_effective_samples": 20}},
     {"figure_free_energy_surfaces", "figure_free_energy_profiles", "all"}),
], ids=["flow", "flow-ladder", "sampling", "score", "hutchinson-probes", "smc", "md", "replica-exchange", "resampled-frames",
        "trim-fraction",
        "reliability-threshold", "divergence-samples",
        "figure-style", "figure-max-kt", "figure-min-bin-effective-samples"])
def test_a_config_change_reruns_exactly_the_stages_it_affects(run, change, expected):
    (run / "change.yaml").write_text(yaml.safe_dump(change))
    result = snakemake(run, "-n", "--cores", "2", "--configfile", "config/test.yaml", "change.yaml")
    assert result.returncode == 0, result.stderr
    jobs = _planned_jobs(result.stdout)
    if isinstance(expected, dict):
        assert jobs == expected
    else:
        assert set(jobs) == expected
    if "systems" in change:
        assert "system=mueller_brown" not in result.stdout
        assert ("system=double_well" in result.stdout) == ("double_well" in change["systems"])


def test_adding_a_replica_exchange_run_reruns_none_of_the_existing_runs(run, config):
    runs = config["systems"]["alanine_dipeptide"]["md"]["runs"]
    (run / "change.yaml").write_text(yaml.safe_dump({"systems": {"alanine_dipeptide": {"md": {"runs": runs + 1}}}}))
    result = snakemake(run, "-n", "--cores", "2", "--configfile", "config/test.yaml", "change.yaml")
    assert result.returncode == 0, result.stderr
    jobs = _planned_jobs(result.stdout)
    assert jobs["replica_exchange"] == 1 and f"replica_exchange_run{runs + 1}.nc" in result.stdout
    assert jobs["replica_state"] == len(config["systems"]["alanine_dipeptide"]["temperatures"])


def test_dry_run_names_the_rule_whose_params_changed(run):
    # `snakemake --list-changes params` would be the natural check, but Snakemake 9.27.1 lists every
    # output that has recorded params (ParamsChange.__or__ returns the empty change of the last file,
    # whose __iter__ still yields that file); the dry run's reasons are computed correctly.
    (run / "change.yaml").write_text(yaml.safe_dump({"systems": {"double_well": {"flow": {"steps": 900}}}}))
    result = snakemake(run, "-n", "--cores", "2", "--configfile", "config/test.yaml", "change.yaml")
    assert result.returncode == 0, result.stderr
    reasons = result.stdout.split("params have changed since last execution:", 1)[1].split("\n")[1].split(",")
    # The temperature-conditioned flow takes the flow block's settings (and its own keys on top).
    assert sorted(rule.strip() for rule in reasons) == ["train_flow", "train_flow_ladder"]


def test_nothing_reruns_without_a_change(run):
    result = snakemake(run, "-n", "--cores", "2", "--configfile", "config/test.yaml")
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr


def test_report_builds_with_every_figure(run):
    result = snakemake(run, "--cores", "1", "--configfile", "config/test.yaml", "--report", "results/report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    html = (run / "results/report.html").read_text(errors="ignore")
    for figure in FIGURES:
        assert f"{figure}.png" in html
    assert "summary.html" in html  # the summary table, unreliable rows marked


def test_estimators_can_be_switched_off_per_system(tmp_path):
    workdir = copy_workflow(tmp_path)
    off = {name: False for name in ("score_exact", "score_hutchinson", "score_perturbation",
                                    "score_perturbation_multistep", "flow_ladder", "score_smc", "flow_mcmc")}
    (workdir / "change.yaml").write_text(yaml.safe_dump({"systems": {"double_well": {"estimators": off}}}))
    result = snakemake(workdir, "-n", "--cores", "2", "results/double_well/summary.nc", "results/mueller_brown/summary.nc",
                       "--configfile", "config/test.yaml", "change.yaml")
    assert result.returncode == 0, result.stderr
    double_well = [block for block in result.stdout.split("\n\n") if "system=double_well" in block]
    rules = {line.split()[-1].rstrip(":") for block in double_well for line in block.splitlines()
             if line.strip().startswith(("rule ", "localrule "))}
    assert rules == {"md", "mbar", "quadrature", "train_flow", "sample_flow", "smc", "reweight", "summary"}, rules
    assert "generative=score" not in "\n".join(double_well)
    # The other system still runs everything.
    assert "wildcards: system=mueller_brown, generative=score" in result.stdout
