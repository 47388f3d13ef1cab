"""States in CV space: half-open boxes, unions of boxes, and dihedral intervals that wrap around ±180°."""

import math

import numpy as np
import pytest

from boltzflow import estimators
from boltzflow.cvs import State, StateError, state_boxes
from boltzflow.molecules import MoleculeError, check_dihedral_chains, load_molecule
from boltzflow.systems import molecule_system_from_config, system_from_config, toy_system_from_config
from workflow_helpers import ROOT

DIHEDRALS = ("phi", "psi")
ALDP_PDB = ROOT / "data/alanine_dipeptide.pdb"
ALDP_BLOCK = {"type": "molecule", "pdb": str(ALDP_PDB), "forcefield": ["amber99sbildn.xml", "amber99_obc.xml"],
              "constraints": "none", "temperatures": [300, 348], "cv_units": "degrees",
              "cvs": {"phi": [4, 6, 8, 10], "psi": [6, 8, 10, 16]},
              "states": {"phi_negative": {"phi": [-180, 0]}, "phi_positive": {"phi": [0, 180]}}}


def _dihedral_state(spec, half_turn=180.0) -> State:
    return State("s", state_boxes("states.s", spec, DIHEDRALS, {cv: half_turn for cv in DIHEDRALS}))


def _contains(state: State, phi, psi) -> list[bool]:
    return state.contains({"phi": np.asarray(phi, dtype=float), "psi": np.asarray(psi, dtype=float)}).tolist()


def test_a_wrap_around_interval_holds_both_sides_of_180_degrees_half_open():
    # psi in [150, 180) ∪ [-180, -150): lo belongs to the state, hi does not, as in [lo, hi).
    state = _dihedral_state({"psi": [150, -150]})
    psi = [150.0, 165.0, 179.999, -180.0, -165.0, -150.0001, -150.0, 149.999, 0.0]
    expected = [True, True, True, True, True, True, False, False, False]
    assert _contains(state, np.zeros(len(psi)), psi) == expected


def test_a_wrap_around_box_splits_into_ordinary_boxes():
    boxes = state_boxes("states.beta", {"phi": [-180, -45], "psi": [90, -150]}, DIHEDRALS,
                        {cv: 180.0 for cv in DIHEDRALS})
    assert boxes == ({"phi": (-180.0, -45.0), "psi": (90.0, 180.0)},
                     {"phi": (-180.0, -45.0), "psi": (-180.0, -150.0)})


def test_a_union_of_boxes_holds_the_points_of_each_box_and_no_others():
    state = _dihedral_state([{"phi": [-180, -45], "psi": [90, -150]}, {"phi": [45, 90], "psi": [-30, 30]}])
    phi = [-100.0, -100.0, 60.0, 60.0, -100.0, 0.0, 60.0]
    psi = [120.0, -170.0, 0.0, 29.99, 0.0, 120.0, 30.0]
    assert _contains(state, phi, psi) == [True, True, True, True, False, False, False]


def test_a_wrap_around_interval_in_radians_wraps_at_pi():
    state = _dihedral_state({"phi": [2.5, -2.5]}, half_turn=math.pi)
    phi = [2.5, 3.1, -math.pi, -2.5001, -2.5, 0.0, 2.4999]
    assert _contains(state, phi, np.zeros(len(phi))) == [True, True, True, True, False, False, False]


def test_a_molecule_built_from_its_config_wraps_its_dihedral_states():
    molecule = molecule_system_from_config("aldp", {
        "type": "molecule", "pdb": str(ROOT / "data/alanine_dipeptide.pdb"), "forcefield": ["amber99sbildn.xml"],
        "constraints": "none", "temperatures": [300], "cv_units": "radians",
        "cvs": {"phi": [4, 6, 8, 10], "psi": [6, 8, 10, 16]},
        "states": {"beta": {"phi": [-math.pi, -0.8], "psi": [1.5, -2.6]}, "alpha": {"phi": [-math.pi, -0.8],
                                                                                   "psi": [-1.5, 0.5]}}})
    beta, alpha = molecule.states
    phi, psi = [-1.5, -1.5, -1.5, -1.5], [2.0, -3.0, -2.6, 0.0]
    assert _contains(beta, phi, psi) == [True, True, False, False]
    assert _contains(alpha, phi, psi) == [False, False, False, True]


@pytest.mark.parametrize("spec, half_turns, message", [
    ({"x": [1.0, 0.5]}, {}, "states.s.x: expected [lo, hi] with lo < hi, got [1.0, 0.5] (this CV does not wrap"),
    ({"phi": [30, 30]}, {"phi": 180.0}, "states.s.phi: [lo, hi] with lo == hi is empty"),
    ([{"x": [0, 1]}, {"x": [2, 1]}], {}, "states.s.1.x: expected [lo, hi] with lo < hi"),
    ([{"x": [0, 1]}, {"x": [0.5, 2]}], {}, "states.s: boxes 0 and 1 overlap"),
    ([{"phi": [170, -170]}, {"phi": [-175, -160]}], {"phi": 180.0}, "states.s: boxes 0 and 1 overlap"),
])
def test_malformed_states_are_one_line_naming_the_key(spec, half_turns, message):
    cvs = tuple(half_turns) or ("x", "y")
    with pytest.raises(StateError) as error:
        state_boxes("states.s", spec, cvs, half_turns)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_a_toy_keeps_lo_below_hi_and_takes_unions_of_boxes():
    with pytest.raises(StateError, match="lo < hi"):
        toy_system_from_config("t", {"type": "toy2d", "energy": "x^2 + y^2", "temperatures": [300],
                                     "states": {"wrapped": {"x": [1.0, -1.0]}}})
    toy = toy_system_from_config("t", {"type": "toy2d", "energy": "x^2 + y^2", "temperatures": [300],
                                       "states": {"outer": [{"x": [-2, -1]}, {"x": [1, 2]}]}})
    x = np.array([-1.5, 0.0, 1.5, 2.0])
    assert toy.states[0].contains({"x": x, "y": np.zeros(4)}).tolist() == [True, False, True, False]


def test_probability_in_no_state_is_the_normalized_weight():
    cvs = {"x": np.array([-1.0, 0.5, 2.0])}
    states = (State("a", ({"x": (-np.inf, 0.0)},)), State("b", ({"x": (1.0, np.inf)},)))
    assert estimators.probability_in_no_state(np.log([1.0, 8.0, 1.0]), cvs, states) == pytest.approx(0.8)


def test_a_dihedral_of_exactly_180_degrees_lies_in_the_state_starting_at_minus_180():
    system = system_from_config("aldp", ALDP_BLOCK)
    positions = np.zeros((1, 22, 3))
    # phi atoms 4, 6, 8, 10 planar trans: atan2(0, negative) = pi exactly.
    positions[0, [4, 6, 8, 10]] = [[0.0, 0.1, 0.0], [0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.1, -0.1, 0.0]]
    phi = system.cv_values(positions)["phi"]
    assert phi[0] == -180.0
    assert system.states[0].contains({"phi": phi, "psi": np.zeros(1)}).tolist() == [True]


def test_chain_check_needs_the_b_c_bond():
    # CA-HA and CA-C are bonds, HA-C is not: [CA, HA, C, O] is no chain though a-b, a-c and c-d are bonds.
    with pytest.raises(MoleculeError, match="atoms 9 .* and 10 .* are not bonded"):
        check_dihedral_chains(load_molecule(ALDP_PDB), {"x": [8, 9, 10, 11]})
