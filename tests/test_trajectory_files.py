"""MD a user already has: trajectory files written by an independent OpenMM run (not boltzflow's MD code),
read back in the per-temperature MD contract with energies recomputed by the system's force field."""

import mdtraj
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import yaml

from boltzflow.md import runs_statistical_inefficiency
from boltzflow.physics_errors import InputFileError
from boltzflow.stages.flow import validation_split
from boltzflow.stages.mbar import mbar_stage
from boltzflow.stages.md import trajectory_state_stage
from boltzflow.systems import system_from_config
from boltzflow.trajectory_files import read_trajectory
from workflow_helpers import ROOT, copy_workflow, snakemake

PDB = ROOT / "data/alanine_dipeptide.pdb"
FORCEFIELD = ["amber99sbildn.xml", "amber99_obc.xml"]
BLOCK = {"type": "molecule", "pdb": str(PDB), "forcefield": FORCEFIELD, "constraints": "none",
         "temperatures": [300, 348], "cv_units": "degrees", "cvs": {"phi": [4, 6, 8, 10], "psi": [6, 8, 10, 16]},
         "states": {"phi_negative": {"phi": [-180, 0]}, "phi_positive": {"phi": [0, 180]}}}


def openmm_run(path, temperature_k: float, seed: int, frames: int, interval: int = 20, constraints=None) -> np.ndarray:
    """Langevin MD of alanine dipeptide straight from OpenMM, frames to a DCD; returns OpenMM's own potential
    energy (kJ/mol) of every frame written."""
    pdb = app.PDBFile(str(PDB))
    system = app.ForceField(*FORCEFIELD).createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=constraints)
    integrator = openmm.LangevinMiddleIntegrator(temperature_k * unit.kelvin, 1.0 / unit.picosecond,
                                                 1.0 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    simulation = app.Simulation(pdb.topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(pdb.positions)
    simulation.minimizeEnergy(maxIterations=200)
    simulation.context.setVelocitiesToTemperature(temperature_k * unit.kelvin, seed)
    reporter = app.DCDReporter(str(path), interval)
    simulation.reporters.append(reporter)
    energies = []
    for _ in range(frames):
        simulation.step(interval)
        state = simulation.context.getState(getEnergy=True)
        energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    reporter._out.close()
    return np.array(energies)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two files at 300 K (different lengths and seeds) and one at 348 K, with OpenMM's energies."""
    folder = tmp_path_factory.mktemp("trajectories")
    made = {}
    for name, temperature_k, seed, frames in [("a", 300, 1, 300), ("b", 300, 2, 200), ("hot", 348, 3, 300)]:
        made[name] = (str(folder / f"{name}.dcd"), openmm_run(folder / f"{name}.dcd", temperature_k, seed, frames))
    return made


@pytest.fixture(scope="module")
def system():
    return system_from_config("alanine_dipeptide", BLOCK)


@pytest.fixture(scope="module")
def imported(runs, system):
    return trajectory_state_stage(system, 300.0, [runs["a"][0], runs["b"][0]], log=lambda _: None)


def test_recomputed_energies_equal_openmm_energies_of_the_frames(runs, imported):
    expected = np.concatenate([runs["a"][1], runs["b"][1]])
    # The DCD stores float32 coordinates: the recomputed energy differs from the run's by that rounding only.
    np.testing.assert_allclose(imported["energy"].values, expected, rtol=0, atol=0.02)
    assert imported.attrs["temperature_k"] == 300.0
    positions = mdtraj.load(runs["a"][0], top=str(PDB)).xyz
    np.testing.assert_array_equal(imported["positions"].values[:300], positions)


def test_every_file_is_its_own_run(imported):
    trajectory, frame = imported["trajectory"].values, imported["frame"].values
    assert list(imported["file"].values) == [str(p) for p in imported["file"].values]
    np.testing.assert_array_equal(np.bincount(trajectory), [300, 200])
    np.testing.assert_array_equal(frame, np.concatenate([np.arange(300), np.arange(200)]))
    g = imported.attrs["statistical_inefficiency_frames"]
    assert g >= 1.0
    # One frame per g in each file, from its own start.
    for index, length in [(0, 300), (1, 200)]:
        kept = frame[(trajectory == index) & (imported["independent"].values == 1)]
        assert kept[0] == 0
        assert abs(len(kept) - length / g) <= 1.5
        assert np.all(np.diff(kept) >= np.floor(g))


@pytest.mark.parametrize("fraction", [0.1, 0.3])
def test_validation_holds_out_the_end_of_every_file(imported, fraction):
    train, validation = validation_split(imported, fraction)
    trajectory, frame = imported["trajectory"].values, imported["frame"].values
    assert len(validation) == round(fraction * 500)
    for index, length in [(0, 300), (1, 200)]:
        held_out = np.sort(frame[validation][trajectory[validation] == index])
        # A suffix of the file about the fraction long, after every training frame of that file.
        assert abs(len(held_out) - fraction * length) <= 1
        np.testing.assert_array_equal(held_out, np.arange(length - len(held_out), length))
        assert frame[train][trajectory[train] == index].max() < held_out.min()


def test_imported_md_goes_through_mbar(runs, system, imported):
    hot = trajectory_state_stage(system, 348.0, [runs["hot"][0]], log=lambda _: None)
    ladder, observables = mbar_stage(system, [imported, hot], bins=12, log=lambda _: None)
    assert np.isfinite(ladder["f"].values).all()
    assert ladder.attrs["statistical_inefficiency_frames"] >= imported.attrs["statistical_inefficiency_frames"]


def test_a_file_with_other_atoms_is_one_line_naming_it(runs, tmp_path):
    short = tmp_path / "short.dcd"
    mdtraj.load(runs["a"][0], top=str(PDB)).atom_slice(range(21)).save_dcd(str(short))
    with pytest.raises(InputFileError, match=rf"^systems.x.md.files.300: '{short}' has 21 atoms, '{PDB}' has 22; ") as error:
        read_trajectory(short, PDB, "systems.x.md.files.300")
    assert "\n" not in str(error.value)


def test_a_pdb_trajectory_with_atoms_in_another_order_names_the_first_difference(runs, tmp_path):
    in_order = tmp_path / "in_order.pdb"
    mdtraj.load(runs["a"][0], top=str(PDB))[:3].save_pdb(str(in_order))
    # The same atoms in the PDB's order pass, and give the frames back.
    assert read_trajectory(in_order, PDB, "k").positions_nm.shape == (3, 22, 3)
    # CA and HA of the alanine swapped, lines and all, in every model.
    lines = in_order.read_text().splitlines()
    for i in [i for i, line in enumerate(lines) if line.startswith("ATOM") and line[12:16].strip() == "CA"]:
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    swapped = tmp_path / "swapped.pdb"
    swapped.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputFileError, match=r"atom 8 is HA \(H\) of ALA, in .* it is CA \(C\) of ALA"):
        read_trajectory(swapped, PDB, "systems.x.md.files.300")


@pytest.mark.parametrize("name, content, expected", [
    ("garbage.dcd", b"not a trajectory", "cannot be read by mdtraj"),
    ("missing.xtc", None, "does not exist"),
    ("frames.txt", b"1 2 3", "not a trajectory format"),
])
def test_unusable_files_are_one_line_naming_them(tmp_path, name, content, expected):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputFileError, match=expected) as error:
        read_trajectory(path, PDB, "systems.x.md.files.300")
    assert str(error.value).startswith(f"systems.x.md.files.300: '{path}'")
    assert "\n" not in str(error.value)


def _ar1(length, rho, rng):
    """A stationary AR(1) series of unit variance: statistical inefficiency (1 + rho) / (1 - rho)."""
    from scipy.signal import lfilter

    noise = rng.normal(scale=np.sqrt(1 - rho ** 2), size=length)
    noise[0] = rng.normal()
    return lfilter([1.0], [1.0, -rho], noise)


def test_runs_of_unequal_length_give_the_ar1_inefficiency():
    # pymbar's estimate of one set of runs scatters by about 10 %; the mean over independent sets does not.
    rho = 0.8
    estimates = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        estimates.append(runs_statistical_inefficiency([_ar1(n, rho, rng) for n in (20000, 12000, 30000, 15000)]))
    assert abs(np.mean(estimates) / ((1 + rho) / (1 - rho)) - 1) < 0.1


def test_one_run_gives_the_ar1_inefficiency():
    # A single file or replica exchange run takes pymbar's one-series estimator; same truth, (1 + rho) / (1 - rho).
    rho = 0.8
    estimates = [runs_statistical_inefficiency([_ar1(60000, rho, np.random.default_rng(seed))]) for seed in range(4)]
    assert abs(np.mean(estimates) / ((1 + rho) / (1 - rho)) - 1) < 0.1
    assert runs_statistical_inefficiency([np.full(100, 2.0)]) == 1.0


def test_a_run_stuck_in_one_state_counts_as_correlated():
    # Indicators: three runs switch every frame at random, one never leaves its state. Dropping the
    # constant run would call the indicator uncorrelated; about the pooled mean it is not.
    rng = np.random.default_rng(1)
    switching = [rng.integers(0, 2, 1000).astype(float) for _ in range(3)]
    assert runs_statistical_inefficiency(switching) < 1.5
    assert runs_statistical_inefficiency([*switching, np.ones(1000)]) > 10
    assert runs_statistical_inefficiency([np.ones(50), np.ones(80)]) == 1.0


def test_the_trajectory_source_replaces_replica_exchange_per_temperature(runs, tmp_path):
    workdir = copy_workflow(tmp_path / "run")
    files = {300: [runs["a"][0], runs["b"][0]], 348: [runs["hot"][0]]}
    change = {"run": ["alanine_dipeptide"],
              "systems": {"alanine_dipeptide": {"temperatures": [300, 348], "md": {"source": "trajectories", "files": files}}}}
    (workdir / "change.yaml").write_text(yaml.safe_dump(change))
    result = snakemake(workdir, "-n", "--cores", "1", "results/alanine_dipeptide/analysis/mbar.nc",
                       "--configfile", "config/test.yaml", "change.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "import_md" in result.stdout and "replica_exchange" not in result.stdout
    table = result.stdout.split("Job stats:", 1)[1].split("total", 1)[0]
    assert [line.split() for line in table.splitlines() if line.startswith(("import_md", "mbar"))] == [
        ["import_md", "2"], ["mbar", "1"]]


def test_a_slow_second_file_sets_the_inefficiency(tmp_path):
    from boltzflow.stages.md import trajectory_state_stage

    fast = tmp_path / "fast.dcd"
    openmm_run(fast, 300, 1, 200)
    slow = tmp_path / "slow.dcd"
    trajectory = mdtraj.load(str(fast), top=str(PDB))
    # Every frame 25 times: a file whose every observable has g of about 25.
    mdtraj.Trajectory(np.repeat(trajectory.xyz[:8], 25, axis=0), trajectory.topology).save_dcd(str(slow))
    system = system_from_config("aldp", BLOCK)
    def g(files):
        return trajectory_state_stage(system, 300.0, [str(f) for f in files], log=lambda _: None).attrs[
            "statistical_inefficiency_frames"]

    # The pooled estimate does not depend on the order of the files, and the slow file raises it.
    assert g([fast, slow]) == pytest.approx(g([slow, fast]), rel=1e-9)
    assert g([fast, slow]) > g([fast])


def test_md_with_constrained_hydrogen_bonds_is_refused_in_one_line(tmp_path):
    # The usual 2 fs setup (HBonds constraints) samples another ensemble than the flexible one used here.
    path = tmp_path / "constrained.dcd"
    openmm_run(path, 300, 4, 40, constraints=app.HBonds)
    system = system_from_config("aldp", BLOCK)
    with pytest.raises(InputFileError) as error:
        trajectory_state_stage(system, 300.0, [str(path)], log=lambda _: None)
    message = str(error.value)
    assert "\n" not in message and "constrained.dcd" in message and "hardly vibrate" in message
    assert message.startswith("systems.aldp.md.files.300:")


# One run takes pymbar's one-series estimator (mintime=3), not the multiple-run one (internal mintime 10).
def test_one_run_takes_the_one_series_estimator():
    from pymbar import timeseries

    x = np.zeros(400)
    rng = np.random.default_rng(0)
    for t in range(1, 400):
        x[t] = 0.5 * x[t - 1] + rng.normal()
    single = timeseries.statistical_inefficiency(x, fast=False, mintime=3)
    assert single != pytest.approx(timeseries.statistical_inefficiency_multiple([x], fast=False))  # guard
    assert runs_statistical_inefficiency([x]) == pytest.approx(single, rel=1e-12)


# The stage itself refuses a file of mirror images (not only check_imported_stereochemistry).
def test_the_trajectory_stage_refuses_a_mirror_image_file(tmp_path):
    import mdtraj

    from boltzflow.physics_errors import InputFileError
    from boltzflow.stages.md import trajectory_state_stage
    from boltzflow.systems import system_from_config

    path = tmp_path / "a.dcd"
    openmm_run(path, 300, 4, 40)
    frames = mdtraj.load(str(path), top=str(PDB))
    frames.xyz[..., 0] *= -1.0
    frames.save_dcd(str(tmp_path / "mirror.dcd"))
    with pytest.raises(InputFileError, match="mirror image"):
        trajectory_state_stage(system_from_config("aldp", BLOCK), 300.0, [str(tmp_path / "mirror.dcd")], log=lambda _: None)
