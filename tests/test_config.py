"""Bad configuration is rejected before any job runs, in one line that names the key."""

import copy

import pytest
import yaml

from boltzflow.config import ConfigError, load_schema, validate_config
from workflow_helpers import ROOT, copy_workflow, snakemake

SCHEMA = load_schema(ROOT / "config/schema.yaml")
DEFAULT = yaml.safe_load((ROOT / "config/config.yaml").read_text())
# The PDB path is relative to the working directory of a run; the tests may run from anywhere.
DEFAULT["systems"]["alanine_dipeptide"]["pdb"] = str(ROOT / "data/alanine_dipeptide.pdb")


def _config_with(path: str, value):
    config = copy.deepcopy(DEFAULT)
    *parents, last = path.split(".")
    node = config
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return config


_DELETE = object()

BAD = [
    ("systems.double_well.temperatures", [], "systems.double_well.temperatures"),
    ("systems.double_well.temperatures", [300, -5], "systems.double_well.temperatures.1"),
    ("systems.double_well.temperatures", [300, 300], "must be distinct"),
    ("systems.double_well.energy", "x^2 + foo(y)", "unknown function 'foo'"),
    ("systems.double_well.energy", "x^2 + z", "unknown variable 'z'"),
    ("systems.double_well.energy", "x^2 + w; w = y^2; z = 1", "'z' is reserved"),
    ("systems.double_well.energy", "(x^2 + y", "systems.double_well.energy"),
    ("systems.double_well.energy", "__import__('os')", "systems.double_well.energy"),
    ("systems.double_well.states.right", {"x": [0.0, 9.0]}, "lies outside bounds.x"),
    ("systems.double_well.states.right", {"x": [-0.5, 2.5]}, "left and right overlap"),
    ("systems.double_well.states.right", {"x": [1.0, 0.5]}, "lo < hi"),
    ("systems.double_well.states.right", {"z": [0.0, 1.0]}, "'z'"),
    ("systems.double_well.md.walkers", 0, "systems.double_well.md.walkers"),
    ("systems.double_well.md.platform", "Quantum", "systems.double_well.md.platform"),
    ("systems.double_well.flow.stepz", 10, "'stepz'"),
    ("systems.double_well.type", "protein", "systems.double_well.type"),
    ("systems.double_well.energy", _DELETE, "'energy' is a required property"),
    ("systems.double_well.bounds", {"x": [-2.5, 2.5]}, "'y' is a required property"),
    ("systems.double_well.temperatures", [300, 300.0000001], "cannot be named exactly"),
    ("systems.double_well.temperatures", [300, 1.5e6], "cannot be named exactly"),
    ("systems.alanine_dipeptide.pdb", "no/such.pdb", "systems.alanine_dipeptide.pdb: cannot read 'no/such.pdb'"),
    ("systems.alanine_dipeptide.pdb", str(ROOT / "README.md"), "has no ATOM or HETATM records"),
    ("systems.alanine_dipeptide.cvs.phi", [4, 6, 8, 22], "systems.alanine_dipeptide.cvs.phi: atom index 22 is out of range"),
    ("systems.alanine_dipeptide.cvs.phi", [4, 6, 6, 10], "systems.alanine_dipeptide.cvs.phi: atom indices must be distinct"),
    ("systems.alanine_dipeptide.cvs.phi", [4, 6, 8], "systems.alanine_dipeptide.cvs.phi"),
    ("systems.alanine_dipeptide.states.phi_positive", {"omega": [0, 180]}, "not a CV; expected one of phi, psi"),
    ("systems.alanine_dipeptide.states.phi_positive", {"phi": [0, 270]}, "lies outside [-180, 180] (degrees)"),
    ("systems.alanine_dipeptide.states.phi_positive", {"phi": [-10, 180]}, "phi_negative and phi_positive overlap"),
    # Dihedral states may wrap around ±180° (lo > hi), but not be empty or leave the turn.
    ("systems.alanine_dipeptide.states.phi_positive", {"phi": [90, 90]},
     "systems.alanine_dipeptide.states.phi_positive.phi: [lo, hi] with lo == hi is empty"),
    ("systems.alanine_dipeptide.states.phi_positive", {"phi": [170, -190]}, "phi: interval [170, -190] lies outside"),
    ("systems.alanine_dipeptide.states.phi_positive", {"phi": [190, 170]}, "phi: interval [190, 170] lies outside"),
    ("systems.alanine_dipeptide.states.phi_positive", {"phi": [0, -170]}, "phi_negative and phi_positive overlap"),
    ("systems.alanine_dipeptide.states.phi_positive", [{"phi": [0, 90]}, {"phi": [90, 200]}],
     "systems.alanine_dipeptide.states.phi_positive.1.phi: interval [90, 200] lies outside [-180, 180] (degrees)"),
    ("systems.alanine_dipeptide.states.phi_positive", [{"phi": [0, 90]}, {"phi": [45, 180]}],
     "systems.alanine_dipeptide.states.phi_positive: boxes 0 and 1 overlap"),
    ("systems.alanine_dipeptide.states.phi_positive", [], "systems.alanine_dipeptide.states.phi_positive"),
    ("systems.alanine_dipeptide.states.phi_positive", "beta",
     "systems.alanine_dipeptide.states.phi_positive: 'beta' is not of type 'object', 'array'"),
    # x and y of a toy do not wrap around, in a single box or in a union.
    ("systems.double_well.states.right", [{"x": [0.0, 1.0]}, {"x": [2.5, 1.0]}],
     "systems.double_well.states.right.1.x: expected [lo, hi] with lo < hi"),
    ("systems.double_well.states.right", [{"x": [0.0, 1.0]}, {"z": [1.0, 2.0]}], "states.right.1: Additional"),
    # Explicit solvent: a water model in the force field (any file named after one).
    ("systems.alanine_dipeptide.forcefield", ["amber14-all.xml", "amber14/tip3p.xml"],
     "systems.alanine_dipeptide.forcefield.1: 'amber14/tip3p.xml' is a water model; explicit solvent is not supported"),
    ("systems.alanine_dipeptide.forcefield", ["charmm36.xml", "charmm36/water.xml"], "forcefield.1: 'charmm36/water.xml'"),
    ("systems.alanine_dipeptide.forcefield", ["amber99sbildn.xml", "tip4pew.xml"], "forcefield.1: 'tip4pew.xml'"),
    ("systems.alanine_dipeptide.forcefield", ["amber14-all.xml", "amber14/opc3.xml"], "forcefield.1: 'amber14/opc3.xml'"),
    ("systems.alanine_dipeptide.forcefield", ["spce.xml", "amber99sbildn.xml"], "forcefield.0: 'spce.xml'"),
    ("systems.alanine_dipeptide.forcefield", ["amber99sbildn.xml", "swm4ndp.xml"], "forcefield.1: 'swm4ndp.xml'"),
    ("systems.alanine_dipeptide.md.platform", "Quantum", "systems.alanine_dipeptide.md.platform"),
    ("systems.alanine_dipeptide.constraints", "all", "systems.alanine_dipeptide.constraints"),
    # Constrained MD samples another ensemble than the models reweight to (every bond and angle free).
    ("systems.alanine_dipeptide.constraints", "hbonds", "systems.alanine_dipeptide.constraints: 'hbonds' is not one of"),
    ("systems.alanine_dipeptide.constraints", "allbonds", "systems.alanine_dipeptide.constraints: 'allbonds' is not one"),
    ("systems.alanine_dipeptide.constraints", "hangles", "systems.alanine_dipeptide.constraints: 'hangles' is not one"),
    ("systems.alanine_dipeptide.cv_units", "gradians", "systems.alanine_dipeptide.cv_units"),
    # Constraints the code enforces, stated by the config (they used to fail only inside a job).
    ("systems.double_well.flow.n_layers", 1, "systems.double_well.flow.n_layers: 1 is less than the minimum of 2"),
    ("systems.double_well.flow.n_bins", 2000, "systems.double_well.flow.n_bins"),
    ("systems.alanine_dipeptide.md.report_interval", 300, "report_interval: 300 must divide steps_per_exchange"),
    ("systems.alanine_dipeptide.temperatures", [300, 631, 348], "an increasing ladder"),
    ("systems.mueller_brown.score.beta_min", 30.0, "systems.mueller_brown.score.beta_min: 30.0 exceeds beta_max"),
    ("systems.mueller_brown.mcmc.burn_in", 5000, "systems.mueller_brown.mcmc.burn_in"),
    ("run", ["double_wel"], "run: 'double_wel' is not a system"),
    # Malformed shapes: a list where a mapping belongs, a number where a list belongs, and back.
    ("systems", [{"double_well": {}}], "systems: [{'double_well': {}}] is not of type 'object'"),
    ("systems.double_well", ["toy2d"], "systems.double_well: ['toy2d'] is not of type 'object'"),
    ("systems.double_well.flow", [8, 64], "systems.double_well.flow: [8, 64] is not of type 'object'"),
    ("systems.double_well.temperatures", 300, "systems.double_well.temperatures: 300 is not of type 'array'"),
    ("systems.double_well.states", ["left", "right"], "systems.double_well.states"),
    ("systems.alanine_dipeptide.cvs", [[4, 6, 8, 10]], "systems.alanine_dipeptide.cvs"),
    ("systems.double_well.md.steps", [100], "systems.double_well.md.steps"),
]


@pytest.mark.parametrize("path, value, expected", BAD, ids=[f"{p}={v}" for p, v, _ in BAD])
def test_bad_config_is_one_clear_line(path, value, expected):
    with pytest.raises(ConfigError) as error:
        validate_config(_config_with(path, value), SCHEMA)
    message = str(error.value)
    assert expected in message
    assert "\n" not in message


def test_dihedral_states_that_wrap_around_and_unions_of_boxes_are_valid():
    config = _config_with("systems.alanine_dipeptide.states", {
        "alpha": {"phi": [-180, 0], "psi": [-120, 50]},
        "beta": {"phi": [-180, 0], "psi": [50, -120]},  # psi from 50 up through ±180 to -120
        "left": [{"phi": [0, 180], "psi": [0, 100]}, {"phi": [0, 180], "psi": [150, -170]}]})
    validate_config(config, SCHEMA)
    config = _config_with("systems.alanine_dipeptide.states", {"ring": {"phi": [3.0, -3.0]},
                                                               "rest": {"phi": [-3.0, 3.0]}})
    config["systems"]["alanine_dipeptide"]["cv_units"] = "radians"
    validate_config(config, SCHEMA)
    with pytest.raises(ConfigError, match=r"phi: interval \[3.0, -3.5\] lies outside \[-3.14159, 3.14159\] \(radians\)"):
        config["systems"]["alanine_dipeptide"]["states"]["ring"] = {"phi": [3.0, -3.5]}
        validate_config(config, SCHEMA)
    config = _config_with("systems.double_well.states.right", [{"x": [0.0, 1.0]}, {"x": [1.0, 2.5]}])
    validate_config(config, SCHEMA)


def _alanine_with_water(tmp_path, residue: str):
    """The shipped alanine dipeptide with one more residue, a water molecule or an ion, after it."""
    lines = (ROOT / "data/alanine_dipeptide.pdb").read_text().splitlines()
    atoms = [line for line in lines if line.startswith(("ATOM", "HETATM"))]
    extra = [f"HETATM   23  O   {residue:<4}A   4       9.000   9.000   9.000  1.00  0.00           O  "]
    path = tmp_path / "solvated.pdb"
    path.write_text("\n".join(atoms + extra + ["END"]) + "\n")
    return str(path)


@pytest.mark.parametrize("residue", ["HOH", "WAT", "TIP3", "SOL", "NA", "CL", "K", "Na+", "Cl-"])
def test_water_or_ions_in_the_pdb_are_refused_as_explicit_solvent(tmp_path, residue):
    path = _alanine_with_water(tmp_path, residue)
    with pytest.raises(ConfigError) as error:
        validate_config(_config_with("systems.alanine_dipeptide.pdb", path), SCHEMA)
    message = str(error.value)
    assert message.startswith(f"systems.alanine_dipeptide.pdb: '{path}' holds water or ions (residue {residue} 4)")
    assert "explicit solvent is not supported" in message and "implicit/obc2.xml" in message
    assert "\n" not in message


# A PDB file is a trajectory format boltzflow reads (one model: one frame); it stands in for any file that exists.
TRAJECTORY = str(ROOT / "data/alanine_dipeptide.pdb")
LADDER = DEFAULT["systems"]["alanine_dipeptide"]["temperatures"]


def _with_md_files(files, source="trajectories"):
    config = copy.deepcopy(DEFAULT)
    md = config["systems"]["alanine_dipeptide"].setdefault("md", {})
    md["source"] = source
    if files is not None:
        md["files"] = files
    return config


EVERY_TEMPERATURE = {t: [TRAJECTORY] for t in LADDER}
BAD_FILES = [
    ({**EVERY_TEMPERATURE, 351: [TRAJECTORY]}, "trajectories",
     "systems.alanine_dipeptide.md.files.351: not a temperature of the ladder; expected one of 300, 350, 408"),
    ({**EVERY_TEMPERATURE, "300K": [TRAJECTORY]}, "trajectories", "md.files.300K: not a temperature of the ladder"),
    ({t: [TRAJECTORY] for t in LADDER if t != 350}, "trajectories",
     "systems.alanine_dipeptide.md.files: no files for 350 K; every temperature of the ladder needs"),
    ({**EVERY_TEMPERATURE, 300: ["no/such.dcd"]}, "trajectories",
     "systems.alanine_dipeptide.md.files.300: 'no/such.dcd' does not exist"),
    ({**EVERY_TEMPERATURE, 300: [str(ROOT / "README.md")]}, "trajectories", "is not a trajectory format boltzflow reads"),
    ({**EVERY_TEMPERATURE, 300: []}, "trajectories", "systems.alanine_dipeptide.md.files.300"),
    ({**EVERY_TEMPERATURE, 300.0: [TRAJECTORY], "300": [TRAJECTORY]}, "trajectories", "300 K is given twice"),
    (None, "trajectories", "systems.alanine_dipeptide.md.files: required with md.source: trajectories"),
    (EVERY_TEMPERATURE, "simulation", "systems.alanine_dipeptide.md.files: given with md.source: simulation"),
    (EVERY_TEMPERATURE, "replay", "systems.alanine_dipeptide.md.source"),
]


@pytest.mark.parametrize("files, source, expected", BAD_FILES, ids=[e.split(": ", 1)[-1][:40] for *_, e in BAD_FILES])
def test_bad_md_files_are_one_clear_line(files, source, expected):
    with pytest.raises(ConfigError) as error:
        validate_config(_with_md_files(files, source), SCHEMA)
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_md_files_are_keyed_by_temperature_label_and_choose_the_trajectory_route():
    from boltzflow.systems import system_from_config

    files = {str(t) if i % 2 else float(t): [TRAJECTORY] for i, t in enumerate(LADDER)}
    config = validate_config(_with_md_files(files), SCHEMA)
    block = config["systems"]["alanine_dipeptide"]
    assert list(block["md"]["files"]) == [f"{t:g}" for t in LADDER]
    assert system_from_config("alanine_dipeptide", block).md_method == "trajectories"
    default = validate_config(copy.deepcopy(DEFAULT), SCHEMA)["systems"]["alanine_dipeptide"]
    assert default["md"]["source"] == "simulation"
    assert system_from_config("alanine_dipeptide", default).md_method == "replica_exchange"


def test_defaults_are_filled_for_every_system():
    config = validate_config(copy.deepcopy(DEFAULT), SCHEMA)
    double_well = config["systems"]["double_well"]
    assert double_well["md"]["report_interval"] == 50  # schema default
    assert double_well["md"]["walkers"] == 512  # config value kept
    assert double_well["analysis"]["bootstrap"] == 200


def test_a_molecule_starts_from_the_defaults_measured_on_a_molecule_not_the_toys():
    molecule = {key: DEFAULT["systems"]["alanine_dipeptide"][key]
                for key in ("type", "pdb", "temperatures", "cvs", "states")}
    toy = {key: DEFAULT["systems"]["double_well"][key] for key in ("type", "energy", "temperatures", "states")}
    config = validate_config({"systems": {"peptide": {**molecule, "flow": {"steps": 700}}, "toy": toy}}, SCHEMA)
    peptide, toy = config["systems"]["peptide"], config["systems"]["toy"]
    kind_defaults = SCHEMA["$defs"]["molecule"]["x-kind-defaults"]
    for block, defaults in kind_defaults.items():
        for key, value in defaults.items():
            if (block, key) != ("flow", "steps"):
                assert peptide[block][key] == value, (block, key)
    assert peptide["flow"]["steps"] == 700  # what the user gives wins
    # The ladder flow has defaults of its own on top of the flow block (which it inherits where it has none).
    assert peptide["flow_ladder"]["steps"] == kind_defaults["flow_ladder"]["steps"] != 700
    assert peptide["flow_ladder"]["learning_rate"] == peptide["flow"]["learning_rate"]
    assert peptide["flow"]["n_layers"] == toy["flow"]["n_layers"] == 8  # the shared default where no kind sets one
    # A toy keeps the shared (toy-tuned) defaults; they differ from a molecule's.
    assert (toy["flow"]["learning_rate"], toy["flow"]["energy_weight"]) == (0.003, 0.0)
    assert (peptide["flow"]["learning_rate"], peptide["flow"]["energy_weight"]) == (0.001, 0.1)
    # The shipped alanine dipeptide config states them explicitly, with what each measured: the same values.
    shipped = DEFAULT["systems"]["alanine_dipeptide"]
    for block, defaults in kind_defaults.items():
        for key, value in defaults.items():
            assert shipped[block].get(key, value) == value, (block, key)


def test_the_ladder_flow_takes_the_flow_block_with_its_own_keys_on_top():
    config = copy.deepcopy(DEFAULT)
    config["systems"]["double_well"]["flow_ladder"] = {"hidden": 32}
    config = validate_config(config, SCHEMA)
    double_well, mueller_brown = config["systems"]["double_well"], config["systems"]["mueller_brown"]
    assert double_well["flow_ladder"] == {**double_well["flow"], "hidden": 32}
    assert mueller_brown["flow_ladder"] == mueller_brown["flow"]  # nothing given: the flow block as it is
    bad = copy.deepcopy(DEFAULT)
    bad["systems"]["double_well"]["flow_ladder"] = {"hidden": 0}
    with pytest.raises(ConfigError, match=r"^systems\.double_well\.flow_ladder\.hidden: "):
        validate_config(bad, SCHEMA)


def _rejected_config_lines(workdir, bad_yaml: str) -> list[str]:
    """Dry-run with the bad config; it must fail without a traceback or results. Returns its error lines."""
    (workdir / "bad.yaml").write_text(bad_yaml)
    result = snakemake(workdir, "-n", "--cores", "1", "--configfile", "bad.yaml")
    assert result.returncode != 0
    output = (result.stdout + result.stderr).strip()
    assert "Traceback" not in output
    assert not (workdir / "results").exists()
    return [line for line in output.splitlines() if "invalid config" in line]


def test_snakemake_rejects_bad_config_before_any_job(tmp_path):
    workdir = copy_workflow(tmp_path)
    lines = _rejected_config_lines(workdir, "systems:\n  double_well:\n    energy: 'x^2 + exp(y, x)'\n")
    assert lines == ["boltzflow: invalid config: systems.double_well.energy: "
                     + lines[0].split("energy: ", 1)[1]]
    assert "exp" in lines[0]


def test_snakemake_lint_is_clean(tmp_path):
    workdir = copy_workflow(tmp_path)
    result = snakemake(workdir, "--lint")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Congratulations, your workflow is in a good condition!" in output
    assert "Lints for" not in output


def test_snakemake_rejects_a_residue_the_force_field_cannot_match(tmp_path):
    workdir = copy_workflow(tmp_path)
    pdb = (ROOT / "data/alanine_dipeptide.pdb").read_text().replace(" ALA ", " XYZ ")
    (workdir / "data/bad.pdb").write_text(pdb)
    lines = _rejected_config_lines(workdir, "systems:\n  alanine_dipeptide:\n    pdb: data/bad.pdb\n")
    assert len(lines) == 1
    assert lines[0].startswith("boltzflow: invalid config: systems.alanine_dipeptide.pdb: residue 2 (XYZ)")


def test_snakemake_rejects_one_based_dihedral_atoms(tmp_path):
    # The PDB serial numbers of φ (5, 7, 9, 11) for its 0-based indices (4, 6, 8, 10): O, H, HA, O.
    workdir = copy_workflow(tmp_path)
    lines = _rejected_config_lines(workdir, "systems:\n  alanine_dipeptide:\n    cvs: {phi: [5, 7, 9, 11], "
                                            "psi: [6, 8, 10, 16]}\n")
    assert len(lines) == 1
    assert lines[0].startswith("boltzflow: invalid config: systems.alanine_dipeptide.cvs.phi: atoms 5 (ACE1 O) "
                               "and 7 (ALA2 H) are not bonded")


@pytest.mark.parametrize("overlay", ["test.yaml", "paper.yaml"])
def test_shipped_configs_are_valid(overlay):
    from workflow_helpers import merged_config

    config = merged_config(ROOT / "config/config.yaml", ROOT / "config" / overlay)
    config["systems"]["alanine_dipeptide"]["pdb"] = str(ROOT / "data/alanine_dipeptide.pdb")
    validate_config(config, SCHEMA)


def test_cross_key_checks_reject_exactly_what_the_code_would_fail_on():
    # Independence MH needs more than burn_in draws per chain; beta_min == beta_max is a valid schedule.
    n_samples = DEFAULT["systems"]["mueller_brown"]["sampling"]["n_samples"]
    per_chain = n_samples // DEFAULT["systems"]["mueller_brown"]["mcmc"]["chains"]
    with pytest.raises(ConfigError, match="mcmc.burn_in"):
        validate_config(_config_with("systems.mueller_brown.mcmc.burn_in", per_chain), SCHEMA)
    validate_config(_config_with("systems.mueller_brown.mcmc.burn_in", per_chain - 1), SCHEMA)
    config = _config_with("systems.mueller_brown.score.beta_min", 20.0)
    config["systems"]["mueller_brown"]["score"]["beta_max"] = 20.0
    validate_config(config, SCHEMA)
    # Without the MCMC estimator, its burn-in constrains nothing.
    config = _config_with("systems.mueller_brown.mcmc.burn_in", per_chain)
    config["systems"]["mueller_brown"]["estimators"] = {"flow_mcmc": False}
    validate_config(config, SCHEMA)


def test_run_selects_the_systems_the_default_target_runs(tmp_path):
    workdir = copy_workflow(tmp_path)
    (workdir / "run.yaml").write_text("run: [double_well]\n")
    result = snakemake(workdir, "-n", "--cores", "2", "--configfile", "config/test.yaml", "run.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "results/double_well/summary.nc" in result.stdout
    assert "mueller_brown" not in result.stdout and "alanine_dipeptide" not in result.stdout


def test_paper_scale_sizes_its_own_ladder_flow():
    # config.yaml's flow_ladder keys (laptop-sized) win over paper.yaml's flow block unless paper.yaml sets them.
    from workflow_helpers import merged_config

    config = merged_config(ROOT / "config/config.yaml", ROOT / "config/paper.yaml")
    config["systems"]["alanine_dipeptide"]["pdb"] = str(ROOT / "data/alanine_dipeptide.pdb")
    peptide = validate_config(config, SCHEMA)["systems"]["alanine_dipeptide"]
    flow, ladder = peptide["flow"], peptide["flow_ladder"]
    assert ladder["steps"] >= flow["steps"] and ladder["hidden"] >= flow["hidden"]
    own = ("hidden", "steps", "energy_weight")
    assert {k: v for k, v in ladder.items() if k not in own} == {k: v for k, v in flow.items() if k not in own}
