"""Static checks of the per-stage conda envs (conda channels cannot be reached here to build them).

For every rule: its env lists every third-party package that its script imports, directly or through the
boltzflow modules it uses (imports inside functions included); every dependency is pinned; and the env's
Python satisfies Snakemake's own Requires-Python, since the script preamble imports snakemake from the
main process's installation.
"""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "boltzflow"

# Import name -> conda-forge package name, where they differ.
CONDA_NAME = {"torch": "pytorch", "netCDF4": "netcdf4", "yaml": "pyyaml", "sklearn": "scikit-learn",
              "arviz_stats": "arviz-stats"}
# Packages needed at run time without an import statement naming them.
IMPLICIT = {"boltzflow.io": {"netcdf4"}}  # xarray's engine="netcdf4"
STDLIB = set(sys.stdlib_module_names)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            if node.module == "boltzflow":
                names.update(f"boltzflow.{alias.name}" for alias in node.names)
    return names


def _module_source(name: str) -> Path | None:
    """The file of a boltzflow module (``boltzflow.stages.mbar`` → stages/mbar.py), or None if it is none."""
    parts = name.split(".")[1:]
    if not parts:
        return None
    path = PACKAGE.joinpath(*parts)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def third_party_imports(script: Path) -> set[str]:
    """Conda package names that a script needs, following boltzflow modules transitively."""
    needed, seen = set(), set()
    todo = [script]
    while todo:
        path = todo.pop()
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "boltzflow":
                source = _module_source(name)
                if source is not None and name not in seen:
                    seen.add(name)
                    needed |= IMPLICIT.get(name, set())
                    todo.append(source)
            elif top not in STDLIB and top not in {"_bootstrap", "snakemake"}:
                needed.add(CONDA_NAME.get(top, top).lower())
    return needed


def rules() -> list[tuple[str, Path, Path]]:
    """(rule name, script, env file) for every rule with a script, parsed from rules/*.smk."""
    found = []
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=rule )", smk.read_text()):
            name = re.match(r"rule (\w+):", block)
            script = re.search(r'script:\s*\n\s*"([^"]+)"', block)
            env = re.search(r'conda:\s*\n\s*"([^"]+)"', block)
            if name and script:
                assert env, f"rule {name.group(1)} has no conda env"
                found.append((name.group(1), (smk.parent / script.group(1)).resolve(),
                              (smk.parent / env.group(1)).resolve()))
    return found


def env_dependencies(path: Path) -> dict[str, str]:
    spec = yaml.safe_load(path.read_text())
    deps = {}
    for entry in spec["dependencies"]:
        assert isinstance(entry, str), f"{path.name}: pip sections are not used here"
        name, _, version = entry.partition("=")
        deps[name.strip().lower()] = version.strip()
    return deps


RULES = rules()


def test_every_rule_with_a_script_was_found():
    assert {name for name, _, _ in RULES} >= {"md", "mbar", "train_flow", "sample_flow", "reweight", "summary"}


@pytest.mark.parametrize("rule, script, env", RULES, ids=[r[0] for r in RULES])
def test_env_lists_every_package_the_rule_imports(rule, script, env):
    missing = third_party_imports(script) - set(env_dependencies(env))
    assert not missing, f"rule {rule}: {env.name} lacks {sorted(missing)}"


@pytest.mark.parametrize("env", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_is_pinned_and_has_a_python_snakemake_accepts(env):
    deps = env_dependencies(env)
    unpinned = [name for name, version in deps.items() if not re.fullmatch(r"[0-9][0-9a-z.]*", version)]
    assert not unpinned, f"{env.name}: not pinned to one version: {unpinned}"
    assert "python" in deps, f"{env.name} does not pin python"
    requires = SpecifierSet(importlib.metadata.metadata("snakemake")["Requires-Python"])
    assert f"{deps['python']}.0" in requires, f"{env.name}: python {deps['python']} vs snakemake {requires}"
    channels = yaml.safe_load(env.read_text())["channels"]
    assert channels[0] == "conda-forge"


def test_import_scan_finds_lazy_imports():
    """The scan follows imports inside functions: the train script needs torch through boltzflow.flows."""
    assert "pytorch" in third_party_imports(ROOT / "workflow/scripts/train_flow.py")
    assert "pymbar" in third_party_imports(ROOT / "workflow/scripts/mbar.py")
    assert "seaborn" in third_party_imports(ROOT / "workflow/scripts/figure_training.py")
