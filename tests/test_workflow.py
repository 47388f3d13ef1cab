"""End to end: config/test.yaml through the real Snakemake workflow, checked against 2D quadrature."""

import math

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from boltzflow.systems import toy_system_from_config
from workflow_helpers import ROOT, copy_workflow, merged_config, snakemake

pytestmark = pytest.mark.slow

SYSTEMS = ["mueller_brown", "double_well"]
FIGURES = ["free_energy_surfaces", "free_energy_profiles", "log_weights", "training"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("workflow"))
    result = snakemake(workdir, "--cores", "2", "--configfile", "config/test.yaml")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    return workdir


@pytest.fixture(scope="module")
def config():
    return merged_config(ROOT / "config/config.yaml", ROOT / "config/test.yaml")


def quadrature_delta_f(system_config: dict, name: str) -> np.ndarray:
    """ΔF_s = -ln(P_s / P_ref) in kT at the target temperature by the midpoint rule on a fine grid."""
    system = toy_system_from_config(name, system_config)
    h = 0.0025
    x = torch.arange(-3.5, 3.0, h, dtype=torch.float64) + h / 2
    y = torch.arange(-2.5, 4.0, h, dtype=torch.float64) + h / 2
    grid = torch.stack(torch.meshgrid(x, y, indexing="ij"), dim=-1)
    u = system.reduced_energy(grid)
    u = u - u.min()
    density = torch.exp(-u).numpy()
    cvs = {"x": grid[..., 0].numpy().ravel(), "y": grid[..., 1].numpy().ravel()}
    mass = np.array([density.ravel()[state.contains(cvs)].sum() for state in system.states])
    # The grid must hold the whole distribution for the probabilities to be right.
    edge = max(density[0].max(), density[-1].max(), density[:, 0].max(), density[:, -1].max())
    assert edge < 1e-9 * density.max()
    return -np.log(mass / mass[0])


@pytest.mark.parametrize("system", SYSTEMS)
def test_state_free_energies_match_quadrature(run, config, system):
    truth = quadrature_delta_f(config["systems"][system], system)
    summary = xr.open_dataset(run / f"results/{system}/summary.nc")
    mbar = summary["delta_f"].sel(estimator="mbar").values
    flow = summary["delta_f"].sel(estimator="flow").values
    print(system, "quadrature", truth, "mbar", mbar, "flow", flow)
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
    assert estimators[:2] == ["mbar", "flow"]
    assert [str(s) for s in summary["state"].values] == list(system_config["states"])
    for name, dims in {"delta_f": ("estimator", "state"), "delta_f_err": ("estimator", "state"),
                       "ess_fraction": ("estimator",), "n_samples": ("estimator",),
                       "cpu_seconds": ("estimator",)}.items():
        assert summary[name].dims == dims
    assert np.all(summary["delta_f"].isel(state=0) == 0)
    assert math.isnan(summary["ess_fraction"].sel(estimator="mbar"))
    assert np.all(summary["cpu_seconds"] > 0)
    assert summary["delta_f"].attrs["units"] == "kT"

    table = (results / "summary.csv").read_text().splitlines()
    assert table[0].startswith("estimator,state,delta_f,delta_f_err")
    assert len(table) == 1 + len(estimators) * len(system_config["states"])

    for cv in ("x", "y"):
        fes = xr.open_dataset(results / f"analysis/fes_{cv}.nc")
        assert fes["F"].dims == ("estimator", cv) and fes["dF"].dims == ("estimator", cv)
        assert fes["F"].attrs["units"] == "kT"

    for path in results.rglob("*.nc"):
        dataset = xr.open_dataset(path)
        assert dataset.attrs["boltzflow_version"] and dataset.attrs["config"].startswith("{"), path
        for name, variable in {**dataset.data_vars, **dataset.coords}.items():
            if variable.dtype.kind not in "OUS":
                assert {"units", "long_name"} <= set(variable.attrs), (path, name)

    for figure in FIGURES:
        png = results / f"figures/{figure}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert not list(results.rglob("*.tmp")), "a temporary file was left behind"


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


DOWNSTREAM_OF_FLOW = {"train_flow", "sample_flow", "reweight", "summary", "figure_free_energy_surfaces",
                      "figure_free_energy_profiles", "figure_log_weights", "figure_training", "all"}


FIGURES_ONLY = {"figure_free_energy_surfaces", "figure_free_energy_profiles", "figure_log_weights",
                "figure_training", "all"}


@pytest.mark.parametrize("change, expected", [
    ({"systems": {"double_well": {"flow": {"learning_rate": 0.002}}}}, DOWNSTREAM_OF_FLOW),
    ({"systems": {"double_well": {"sampling": {"n_samples": 30000}}}},
     DOWNSTREAM_OF_FLOW - {"train_flow", "figure_training"}),
    ({"systems": {"double_well": {"md": {"steps": 70000}}}}, DOWNSTREAM_OF_FLOW | {"md", "mbar"}),
    ({"figures": {"style": "whitegrid"}}, FIGURES_ONLY),
], ids=["flow", "sampling", "md", "figure-style"])
def test_a_config_change_reruns_exactly_the_stages_it_affects(run, change, expected):
    (run / "change.yaml").write_text(yaml.safe_dump(change))
    result = snakemake(run, "-n", "--cores", "2", "--configfile", "config/test.yaml", "change.yaml")
    assert result.returncode == 0, result.stderr
    assert set(_planned_jobs(result.stdout)) == expected
    if "systems" in change:
        assert "system=mueller_brown" not in result.stdout


def test_dry_run_names_the_rule_whose_params_changed(run):
    # `snakemake --list-changes params` would be the natural check, but Snakemake 9.27.1 lists every
    # output that has recorded params (ParamsChange.__or__ returns the empty change of the last file,
    # whose __iter__ still yields that file); the dry run's reasons are computed correctly.
    (run / "change.yaml").write_text(yaml.safe_dump({"systems": {"double_well": {"flow": {"steps": 900}}}}))
    result = snakemake(run, "-n", "--cores", "2", "--configfile", "config/test.yaml", "change.yaml")
    assert result.returncode == 0, result.stderr
    reasons = result.stdout.split("params have changed since last execution:", 1)[1].split("\n")[1].split(",")
    assert [rule.strip() for rule in reasons] == ["train_flow"]


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
