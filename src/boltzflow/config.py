"""Validation of the workflow configuration, before any job runs.

Two passes, both raising :class:`ConfigError` with a one-line message that names the key:

1. the JSON schema (``config/schema.yaml``): types, ranges, required keys; it also fills in the
   defaults it declares, including under ``systems.<name>`` (which plain jsonschema cannot do), first
   those of the system's kind (``x-kind-defaults``: a molecule's flow and score settings are not a toy's);
   the ``flow_ladder`` block is the ``flow`` block with the keys given under ``flow_ladder`` on top (and,
   for a kind with ``flow_ladder`` kind defaults, a molecule, those too: they win over the user's ``flow``), never
   with the flow block's temperature annealing (``anneal_steps``);
2. the checks a schema cannot express: energy expressions parse under the whitelist grammar,
   temperatures are positive and distinct, states lie inside the bounds (a dihedral's turn) and do not
   overlap, and only periodic CVs (dihedrals) take intervals that wrap around; a molecule has no explicit
   solvent (a water-model file, or water or ions in its PDB), and its MD trajectory files exist for
   exactly the temperatures of its ladder. The keys of ``md.files`` are rewritten as the temperature
   labels of file names (300 -> "300"), which the rules look them up by.

This module imports no heavy dependency (no torch, no OpenMM) because the Snakefile imports it
in the Snakemake process itself.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from boltzflow.cvs import HALF_TURN, StateError, box_keys, boxes_overlap, state_boxes
from boltzflow.expression import ExpressionError, parse_expression
from boltzflow.trajectory_files import TRAJECTORY_FORMATS

TOY_CVS = ("x", "y")
SYSTEM_KINDS = ("toy2d", "molecule")  # the schema's $defs of each kind

#: Explicit solvent is refused: boltzflow samples solute configurations, and MD runs without cutoffs or a
#: periodic box. A water-model file beside a bare solute changes nothing (the run is in vacuum, silently),
#: and water in the PDB would be a droplet in vacuum whose every molecule the models would have to learn.
EXPLICIT_SOLVENT = ("explicit solvent is not supported (boltzflow samples the solute in vacuum or implicit "
                    "solvent); use an implicit-solvent file instead, e.g. [amber99sbildn.xml, amber99_obc.xml] "
                    "or [amber14-all.xml, implicit/obc2.xml]")
#: Words that begin the names of OpenMM's water-model files (amber14/tip3p.xml, charmm36/tip3p-pme-b.xml,
#: tip4pew.xml, spce.xml, opc3.xml, swm4ndp.xml, charmm36/water.xml, iamoeba.xml).
WATER_MODELS = ("tip3p", "tip4p", "tip5p", "spc", "opc", "swm4", "swm6", "water", "iamoeba")
#: Residue names of water and of the common ions of explicit solvent, upper case (AMBER, CHARMM, GROMACS).
SOLVENT_RESIDUES = frozenset({"HOH", "WAT", "H2O", "DOD", "TIP3", "TIP4", "TIP5", "T3P", "T4P", "T5P", "TP3",
                              "SOL", "SPC", "OPC", "NA", "CL", "K", "NA+", "CL-", "K+", "SOD", "CLA", "POT"})


class ConfigError(ValueError):
    """A configuration value is wrong; the message is one line and names the key."""


def load_schema(path: str | Path) -> dict:
    with open(path) as handle:
        return yaml.safe_load(handle)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<config>"


def _describe(error: jsonschema.ValidationError) -> str:
    """One line for a schema violation: the key path and what was expected."""
    where = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        return f"{where}: {error.message} (check the spelling against config/schema.yaml)"
    if error.validator == "required":
        return f"{where}: {error.message}"
    expected = error.schema.get("description") if isinstance(error.schema, dict) else None
    detail = error.message.replace("\n", " ")
    if expected and error.validator in {"type", "enum", "minimum", "exclusiveMinimum", "maximum",
                                        "minItems", "maxItems", "pattern", "uniqueItems"}:
        return f"{where}: {detail}; expected {expected}"
    return f"{where}: {detail}"


def _fill_defaults(instance: Any, schema: dict, root: dict) -> None:
    """Insert schema defaults in place, descending into properties and additionalProperties."""
    if "$ref" in schema:
        schema = _resolve(schema["$ref"], root)
    if not isinstance(instance, dict):
        return
    for name, sub in schema.get("properties", {}).items():
        resolved = _resolve(sub["$ref"], root) if "$ref" in sub else sub
        if name not in instance and "default" in resolved:
            instance[name] = copy.deepcopy(resolved["default"])
        if name in instance:
            _fill_defaults(instance[name], resolved, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        known = set(schema.get("properties", {}))
        for name, value in instance.items():
            if name not in known:
                _fill_defaults(value, extra, root)


def _fill_kind_defaults(system: dict, kind_defaults: dict) -> None:
    """The defaults of this kind of system (a molecule's are not a toy's), under the keys the user left out;
    a block given as something other than a mapping is left to the schema's error."""
    for block, defaults in kind_defaults.items():
        given = system.setdefault(block, {})
        if isinstance(given, dict):
            for key, value in defaults.items():
                given.setdefault(key, copy.deepcopy(value))


def _resolve(ref: str, root: dict) -> dict:
    if not ref.startswith("#/"):
        raise ConfigError(f"schema: only local $ref are supported, got {ref!r}")
    node = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def validate_config(config: dict, schema: dict) -> dict:
    """Fill defaults and validate; return the config (modified in place) or raise ConfigError."""
    _fill_defaults(config, schema, schema)
    systems = config.get("systems")
    # A malformed shape (a list where the mapping belongs) is left to the schema's one-line error.
    for system in (systems.values() if isinstance(systems, dict) else ()):
        # Each kind of system has its own defaults; the schema picks the kind by its type.
        if isinstance(system, dict) and system.get("type") in SYSTEM_KINDS:
            _fill_kind_defaults(system, schema["$defs"][system["type"]].get("x-kind-defaults", {}))
            # flow_ladder's keys are checked as given, with no schema defaults: it inherits the flow block's
            # (below). Its kind defaults (a molecule's) are already in it, so they win over the user's flow keys.
            flow_ladder = system.pop("flow_ladder", {})
            _fill_defaults(system, schema["$defs"][system["type"]], schema)
            system["flow_ladder"] = flow_ladder
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise ConfigError(_describe(best))
    for name, system in config["systems"].items():
        # The temperature-conditioned flow: the flow block's settings, with the keys given under it on top;
        # it learns every temperature at once, so the flow block's temperature annealing is not inherited.
        if system["flow_ladder"].get("anneal_steps", 0):
            raise ConfigError(f"systems.{name}.flow_ladder.anneal_steps: the temperature-conditioned flow learns "
                              "every ladder temperature at once and has no annealing; expected 0 (or leave it out)")
        system["flow_ladder"] = {**system["flow"], **system["flow_ladder"], "anneal_steps": 0}
        _check_system(name, system)
        _check_blocks(name, system)
    for name in config.get("run", []):
        if name not in config["systems"]:
            raise ConfigError(f"run: {name!r} is not a system; expected one of {', '.join(config['systems'])}")
    return config


def _check_blocks(name: str, system: dict) -> None:
    """Constraints between keys of the model blocks, which a JSON schema cannot state."""
    key = f"systems.{name}"
    score = system["score"]
    if score["beta_min"] > score["beta_max"]:
        raise ConfigError(f"{key}.score.beta_min: {score['beta_min']} exceeds beta_max = {score['beta_max']}; "
                          "expected beta_min <= beta_max")
    if system["estimators"]["flow_ladder"] and len(system["temperatures"]) < 2:
        raise ConfigError(f"{key}.estimators.flow_ladder: a temperature-conditioned flow needs a ladder; "
                          f"temperatures has {len(system['temperatures'])}, expected at least 2 (or flow_ladder: false)")
    if system["flow"]["anneal_steps"] and len(system["temperatures"]) < 2:
        raise ConfigError(f"{key}.flow.anneal_steps: temperature annealing starts at the hottest ladder "
                          f"temperature; temperatures has {len(system['temperatures'])}, expected at least 2 "
                          "(or anneal_steps: 0)")
    if system["flow"]["anneal_steps"] and min(system["temperatures"][1:], default=math.inf) <= system["temperatures"][0]:
        raise ConfigError(f"{key}.flow.anneal_steps: temperature annealing runs down to the target (the first "
                          f"temperature); temperatures {system['temperatures']} has one below it, expected every "
                          "other temperature above the first")
    mcmc, n_samples = system["mcmc"], system["sampling"]["n_samples"]
    if system["estimators"]["flow_mcmc"] and n_samples // mcmc["chains"] <= mcmc["burn_in"]:
        raise ConfigError(f"{key}.mcmc.burn_in: {mcmc['burn_in']} burn-in steps need more than that many flow "
                          f"samples per chain; sampling.n_samples = {n_samples} gives "
                          f"{n_samples // mcmc['chains']} for {mcmc['chains']} chains")


def _check_system(name: str, system: dict) -> None:
    """The checks of the system's kind (the schema has checked its type)."""
    KIND_CHECKS[system["type"]](name, system)


def _check_toy(name: str, system: dict) -> None:
    key = f"systems.{name}"
    try:
        parse_expression(system["energy"], TOY_CVS)
    except ExpressionError as error:
        raise ConfigError(f"{key}.energy: {error}") from None
    try:
        # OpenMM sees the expression with a z restraint added; a definition named z would replace it.
        parse_expression(system["energy"], (*TOY_CVS, "z"))
    except ExpressionError:
        raise ConfigError(f"{key}.energy: the name 'z' is reserved for the MD restraint; "
                          "rename that definition") from None

    _check_temperatures(f"{key}.temperatures", system["temperatures"])

    bounds = system.get("bounds")
    if bounds:
        for cv, (lo, hi) in bounds.items():
            if not lo < hi:
                raise ConfigError(f"{key}.bounds.{cv}: expected [lo, hi] with lo < hi, got {[lo, hi]}")

    states = {}
    for state, spec in system["states"].items():
        state_key = f"{key}.states.{state}"
        states[state] = _state_boxes(state_key, spec, TOY_CVS)
        for box_key, box in box_keys(state_key, spec):
            for cv, (lo, hi) in box.items():
                blo, bhi = (bounds or {}).get(cv, (-math.inf, math.inf))
                # An unbounded side (a missing CV) is allowed: the bounds only frame grids and plots.
                if (math.isfinite(lo) and lo < blo) or (math.isfinite(hi) and hi > bhi):
                    raise ConfigError(f"{box_key}.{cv}: interval {[lo, hi]} lies outside bounds.{cv} = {[blo, bhi]}")
    _check_disjoint(f"{key}.states", states)


def _check_disjoint(key: str, states: dict) -> None:
    """States are unions of boxes: two overlap if any box of one overlaps any box of the other."""
    names = list(states)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if any(boxes_overlap(a, b) for a in states[first] for b in states[second]):
                raise ConfigError(f"{key}: {first} and {second} overlap; states must be disjoint")


def temperature_label(temperature: float) -> str:
    """The temperature as it appears in file names: 300 -> '300', 312.5 -> '312.5'."""
    return f"{float(temperature):g}"


def _check_temperatures(key: str, temperatures: list) -> None:
    """Distinct values whose file-name labels are distinct and read back as the same number."""
    if len(set(temperatures)) != len(temperatures):
        raise ConfigError(f"{key}: values must be distinct, got {temperatures}")
    labels = [temperature_label(t) for t in temperatures]
    for t, label in zip(temperatures, labels):
        # Output files are named by the label: it must give back the value and match the rules'
        # wildcard pattern (digits with an optional decimal part; no exponent).
        if float(label) != float(t) or "e" in label:
            raise ConfigError(f"{key}: {t} cannot be named exactly in file names; "
                              "use at most 6 significant digits and no exponent (e.g. 312.5)")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{key}: values must be distinct, got {temperatures}")


def _state_boxes(key: str, spec, cvs: tuple[str, ...], half_turns: dict[str, float] | None = None):
    """The boxes of a state (see :func:`boltzflow.cvs.state_boxes`), or a ConfigError naming the key."""
    try:
        return state_boxes(key, spec, cvs, half_turns)
    except StateError as error:
        raise ConfigError(str(error)) from None


def _check_molecule(name: str, system: dict) -> None:
    """Checks that need no OpenMM: the PDB is readable and holds no solvent, the force field no water model,
    the CVs name real, distinct atoms, the states fit.

    Whether the force field matches every residue, and whether each CV's atoms form a bonded chain, needs
    OpenMM's topology; the Snakefile checks both when OpenMM is importable (see rules/common.smk), and the
    MD job does in any case, first thing.
    """
    key = f"systems.{name}"
    _check_temperatures(f"{key}.temperatures", system["temperatures"])
    temperatures = system["temperatures"]
    if any(b <= a for a, b in zip(temperatures, temperatures[1:])):
        raise ConfigError(f"{key}.temperatures: replica exchange needs an increasing ladder, got {temperatures}")
    md = system["md"]
    _check_md_files(f"{key}.md", md, temperatures)
    if md["steps_per_exchange"] % md["report_interval"]:
        raise ConfigError(f"{key}.md.report_interval: {md['report_interval']} must divide "
                          f"steps_per_exchange = {md['steps_per_exchange']}")
    _check_no_water_model(f"{key}.forcefield", system["forcefield"])
    records = pdb_atom_records(system["pdb"], f"{key}.pdb")
    _check_no_solvent_residues(f"{key}.pdb", system["pdb"], records)
    n_atoms = len(records)
    for cv, atoms in system["cvs"].items():
        if len(set(atoms)) != 4:
            raise ConfigError(f"{key}.cvs.{cv}: atom indices must be distinct, got {atoms}")
        if max(atoms) >= n_atoms:
            raise ConfigError(f"{key}.cvs.{cv}: atom index {max(atoms)} is out of range; "
                              f"{system['pdb']} has {n_atoms} atoms (indices 0-{n_atoms - 1})")
    half_turn = HALF_TURN[system["cv_units"]]
    cvs = tuple(system["cvs"])
    states = {}
    for state, spec in system["states"].items():
        state_key = f"{key}.states.{state}"
        for box_key, box in box_keys(state_key, spec):
            for cv, (lo, hi) in box.items():
                if cv not in cvs:
                    raise ConfigError(f"{box_key}.{cv}: not a CV; expected one of {', '.join(cvs)}")
                # -inf and inf stand for an unbounded side; any other value must lie on the turn.
                if not (-half_turn <= lo <= half_turn or lo == -math.inf) or \
                        not (-half_turn <= hi <= half_turn or hi == math.inf):
                    raise ConfigError(f"{box_key}.{cv}: interval {[lo, hi]} lies outside "
                                      f"[{-half_turn:g}, {half_turn:g}] ({system['cv_units']})")
        # Every CV is a dihedral: lo > hi wraps around the half turn.
        states[state] = _state_boxes(state_key, spec, cvs, {cv: half_turn for cv in cvs})
    _check_disjoint(f"{key}.states", states)


def _check_md_files(key: str, md: dict, temperatures: list) -> None:
    """With ``source: trajectories``, files for exactly the ladder's temperatures, each one there and of a
    format boltzflow reads; the keys become temperature labels. Whether a file holds the PDB's atoms
    needs its contents: the job that reads it checks that, first thing."""
    if md["source"] != "trajectories":
        if "files" in md:
            raise ConfigError(f"{key}.files: given with md.source: {md['source']}; set md.source: trajectories "
                              "to use them, or remove md.files")
        return
    if "files" not in md:
        raise ConfigError(f"{key}.files: required with md.source: trajectories; expected a list of trajectory "
                          "files per temperature of the ladder")
    ladder = {temperature_label(t): t for t in temperatures}
    files = {}
    for name, paths in md["files"].items():
        try:
            label = temperature_label(float(name))
        except (TypeError, ValueError):
            label = None
        if label not in ladder:
            raise ConfigError(f"{key}.files.{name}: not a temperature of the ladder; expected one of "
                              f"{', '.join(ladder)} (K)")
        if label in files:
            raise ConfigError(f"{key}.files.{name}: {ladder[label]:g} K is given twice")
        for path in paths:
            suffix = Path(path).suffix.lower()
            if suffix not in TRAJECTORY_FORMATS:
                raise ConfigError(f"{key}.files.{name}: '{path}' is not a trajectory format boltzflow reads; "
                                  f"expected one of {', '.join(TRAJECTORY_FORMATS)}")
            if not Path(path).is_file():
                raise ConfigError(f"{key}.files.{name}: '{path}' does not exist (paths are relative to the "
                                  "working directory)")
        files[label] = list(paths)
    missing = [label for label in ladder if label not in files]
    if missing:
        raise ConfigError(f"{key}.files: no files for {', '.join(missing)} K; every temperature of the ladder "
                          "needs its trajectories")
    md["files"] = files


def pdb_atom_records(path: str, key: str) -> list[str]:
    """The ATOM/HETATM records of the first model, or ConfigError naming the key and file."""
    try:
        with open(path) as handle:
            lines = handle.readlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{key}: cannot read {path!r} ({error.__class__.__name__}: "
                          f"{getattr(error, 'strerror', None) or error})") from None
    records = []
    for line in lines:
        if line.startswith("ENDMDL"):
            break
        if line.startswith(("ATOM  ", "HETATM")):
            records.append(line)
    if not records:
        raise ConfigError(f"{key}: {path!r} has no ATOM or HETATM records; expected a PDB file")
    return records


def _check_no_water_model(key: str, forcefield: list[str]) -> None:
    """A force-field file of a water model means explicit solvent (see :data:`WATER_MODELS`)."""
    for index, path in enumerate(forcefield):
        words = re.split(r"[^a-z0-9]+", path.lower())
        if any(word.startswith(WATER_MODELS) for word in words):
            raise ConfigError(f"{key}.{index}: {path!r} is a water model; {EXPLICIT_SOLVENT}")


def _check_no_solvent_residues(key: str, path: str, records: list[str]) -> None:
    """Water or ions in the PDB mean explicit solvent (see :data:`SOLVENT_RESIDUES`)."""
    solvent = []
    for line in records:
        # Residue name in columns 18-21 (four-letter names such as TIP3 spill into column 21), number 23-26.
        residue = (line[17:21].strip(), line[22:26].strip(), line[21])
        if residue[0].upper() in SOLVENT_RESIDUES and residue not in solvent:
            solvent.append(residue)
    if solvent:
        name, number, _ = solvent[0]
        more = f" and {len(solvent) - 1} more" if len(solvent) > 1 else ""
        raise ConfigError(f"{key}: {path!r} holds water or ions (residue {name} {number}{more}); remove them: "
                          f"{EXPLICIT_SOLVENT}")


#: The checks a schema cannot express, per system kind (``type``).
KIND_CHECKS = {"toy2d": _check_toy, "molecule": _check_molecule}
