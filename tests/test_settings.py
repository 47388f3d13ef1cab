"""Typed settings: every config block builds, and so does what consumes it, at the schema's extremes.

A config the dry run accepts must never fail later for a reason the config could have shown: every
constraint the code enforces must be in the schema (or the config checks). These tests build each block's
settings object, and the objects the stages build from it, from the schema's minimum and maximum values.
"""

import math

import pytest
import torch

from boltzflow.config import load_schema
from boltzflow.flows import MixedSplineCouplingFlow, SplineCouplingFlow
from boltzflow.scores import ConservativeScore, UnconstrainedScore
from boltzflow.settings import SYSTEM_BLOCKS, from_block
from boltzflow.systems import MD_SOURCE_KEYS, system_from_config
from workflow_helpers import ROOT

SCHEMA = load_schema(ROOT / "config/schema.yaml")
MOLECULE_MD = SCHEMA["$defs"]["molecule"]["properties"]["md"]
BLOCKS = {**{name: SCHEMA["$defs"][name] for name in SYSTEM_BLOCKS},
          "toy2d.md": SCHEMA["$defs"]["toy2d"]["properties"]["md"],
          # Without the keys that choose the MD's source (trajectory files have no extremes; config.py checks them).
          "molecule.md": {**MOLECULE_MD, "properties": {key: spec for key, spec in MOLECULE_MD["properties"].items()
                                                        if key not in MD_SOURCE_KEYS}}}


def extreme(spec: dict, side: str):
    """The smallest or largest value a property's schema allows (its default where it has no bound)."""
    if "enum" in spec:
        return spec["enum"][0 if side == "min" else -1]
    bound, exclusive = (("minimum", "exclusiveMinimum") if side == "min" else ("maximum", "exclusiveMaximum"))
    step = 1 if spec.get("type") == "integer" else 1e-6
    if bound in spec:
        return spec[bound]
    if exclusive in spec:
        return spec[exclusive] + (step if side == "min" else -step)
    return spec["default"]


def block_at(name: str, side: str) -> dict:
    return {key: extreme(spec, side) for key, spec in BLOCKS[name]["properties"].items()}


@pytest.mark.parametrize("side", ["min", "max"])
@pytest.mark.parametrize("name", sorted(SYSTEM_BLOCKS))
def test_every_settings_block_builds_at_the_schema_extremes(name, side):
    settings = from_block(SYSTEM_BLOCKS[name], block_at(name, side))
    for key, value in block_at(name, side).items():
        assert getattr(settings, key) == value


@pytest.mark.parametrize("side", ["min", "max"])
def test_flows_build_from_the_flow_settings_at_the_schema_extremes(side):
    settings = from_block(SYSTEM_BLOCKS["flow"], block_at("flow", side))
    SplineCouplingFlow(dim=2, **settings.architecture)
    MixedSplineCouplingFlow(dim=4, circular=[True, False, True, False], **settings.architecture)


@pytest.mark.parametrize("side", ["min", "max"])
@pytest.mark.parametrize("network", [UnconstrainedScore, ConservativeScore])
def test_score_networks_build_from_the_score_settings_at_the_schema_extremes(side, network):
    settings = from_block(SYSTEM_BLOCKS["score"], block_at("score", side))
    model = network(dim=2, **settings.architecture)
    score = model(torch.zeros(3, 2), torch.full((3,), 0.5))
    assert torch.isfinite(score).all()


@pytest.mark.parametrize("side", ["min", "max"])
@pytest.mark.parametrize("kind", ["toy2d", "molecule"])
def test_md_settings_build_at_the_schema_extremes(kind, side):
    block = block_at(f"{kind}.md", side)
    system = system_from_config("s", {"type": kind, "energy": "x^2 + y^2", "pdb": "unused.pdb",
                                      "forcefield": ["amber99sbildn.xml"], "constraints": "none",
                                      "temperatures": [300], "states": {}, "cvs": {}})
    settings = system.md_settings(block)
    assert all(getattr(settings, key) == value for key, value in block.items())


def test_unknown_setting_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="n_layer"):
        from_block(SYSTEM_BLOCKS["flow"], {"n_layer": 3})


def test_score_sampling_probes_follow_the_likelihood():
    settings = from_block(SYSTEM_BLOCKS["score_sampling"], {"hutchinson_probes": 3, "perturbation_probes": 2})
    assert [settings.probes(name) for name in ("exact", "hutchinson", "perturbation", "perturbation_multistep")] == [
        1, 3, 2, 2]
    assert math.isfinite(settings.n_samples)
