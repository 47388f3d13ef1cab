"""Validation of the workflow configuration, before any job runs.

Two passes, both raising :class:`ConfigError` with a one-line message that names the key:

1. the JSON schema (``config/schema.yaml``): types, ranges, required keys; it also fills in the
   defaults it declares, including under ``systems.<name>`` (which plain jsonschema cannot do);
2. the checks a schema cannot express: energy expressions parse under the whitelist grammar,
   temperatures are positive and distinct, states lie inside the bounds and do not overlap, a molecule's
   MD trajectory files exist for exactly the temperatures of its ladder. The keys of ``md.files`` are
   rewritten as the temperature labels of file names (300 -> "300"), which the rules look them up by.

This module imports no heavy dependency (no torch, no OpenMM) because the Snakefile imports it
in the Snakemake process itself.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from boltzflow.cvs import StateError
from boltzflow.cvs import state_box as cvs_state_box
from boltzflow.expression import ExpressionError, parse_expression
from boltzflow.trajectory_files import TRAJECTORY_FORMATS

TOY_CVS = ("x", "y")
SYSTEM_KINDS = ("toy2d", "molecule")  # the schema's $defs of each kind

#: The range of a dihedral CV in each unit: states and grids live in [-half_turn, half_turn].
HALF_TURN = {"degrees": 180.0, "radians": math.pi}


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
            _fill_defaults(system, schema["$defs"][system["type"]], schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise ConfigError(_describe(best))
    for name, system in config["systems"].items():
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

    boxes = {}
    for state, box in system["states"].items():
        boxes[state] = state_box(f"{key}.states.{state}", box)
        if bounds:
            for cv, (lo, hi) in boxes[state].items():
                blo, bhi = bounds.get(cv, (-math.inf, math.inf))
                # An unbounded side (a missing CV) is allowed: the bounds only frame grids and plots.
                if (math.isfinite(lo) and lo < blo) or (math.isfinite(hi) and hi > bhi):
                    raise ConfigError(
                        f"{key}.states.{state}.{cv}: interval {[lo, hi]} lies outside "
                        f"bounds.{cv} = {[blo, bhi]}")
    _check_disjoint(f"{key}.states", boxes)


def _check_disjoint(key: str, boxes: dict) -> None:
    names = list(boxes)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            if _boxes_overlap(boxes[first], boxes[second]):
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


def state_box(key: str, box: dict, cvs=TOY_CVS) -> dict[str, tuple[float, float]]:
    """Complete a state box: a missing CV is unbounded. Intervals are half-open [lo, hi)."""
    try:
        return cvs_state_box(key, box, cvs)
    except StateError as error:
        raise ConfigError(str(error)) from None


def _boxes_overlap(a: dict, b: dict) -> bool:
    # Half-open intervals [lo, hi) overlap iff each starts before the other ends.
    return all(a[cv][0] < b[cv][1] and b[cv][0] < a[cv][1] for cv in a)


def _check_molecule(name: str, system: dict) -> None:
    """Checks that need no OpenMM: the PDB is readable, the CVs name real, distinct atoms, the states fit.

    Whether the force field matches every residue needs OpenMM; the Snakefile checks it too when
    OpenMM is importable (see rules/common.smk), and the MD job does in any case, first thing.
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
    n_atoms = count_pdb_atoms(system["pdb"], f"{key}.pdb")
    for cv, atoms in system["cvs"].items():
        if len(set(atoms)) != 4:
            raise ConfigError(f"{key}.cvs.{cv}: atom indices must be distinct, got {atoms}")
        if max(atoms) >= n_atoms:
            raise ConfigError(f"{key}.cvs.{cv}: atom index {max(atoms)} is out of range; "
                              f"{system['pdb']} has {n_atoms} atoms (indices 0-{n_atoms - 1})")
    half_turn = HALF_TURN[system["cv_units"]]
    cvs = tuple(system["cvs"])
    boxes = {}
    for state, box in system["states"].items():
        for cv in box:
            if cv not in cvs:
                raise ConfigError(f"{key}.states.{state}.{cv}: not a CV; expected one of {', '.join(cvs)}")
        boxes[state] = state_box(f"{key}.states.{state}", box, cvs)
        for cv, (lo, hi) in boxes[state].items():
            if (math.isfinite(lo) and lo < -half_turn) or (math.isfinite(hi) and hi > half_turn):
                raise ConfigError(f"{key}.states.{state}.{cv}: interval {[lo, hi]} lies outside "
                                  f"[{-half_turn:g}, {half_turn:g}] ({system['cv_units']})")
    _check_disjoint(f"{key}.states", boxes)


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


def count_pdb_atoms(path: str, key: str) -> int:
    """Number of ATOM/HETATM records of the first model, or ConfigError naming the key and file."""
    try:
        with open(path) as handle:
            lines = handle.readlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{key}: cannot read {path!r} ({error.__class__.__name__}: "
                          f"{getattr(error, 'strerror', None) or error})") from None
    n_atoms = 0
    for line in lines:
        if line.startswith("ENDMDL"):
            break
        if line.startswith(("ATOM  ", "HETATM")):
            n_atoms += 1
    if n_atoms == 0:
        raise ConfigError(f"{key}: {path!r} has no ATOM or HETATM records; expected a PDB file")
    return n_atoms


#: The checks a schema cannot express, per system kind (``type``).
KIND_CHECKS = {"toy2d": _check_toy, "molecule": _check_molecule}
