"""The exact answer of a toy by quadrature, for states that are unions of boxes."""

import numpy as np
import pytest
import xarray as xr
from scipy.special import erf

from boltzflow.cvs import State
from boltzflow.settings import AnalysisSettings
from boltzflow.stages.datasets import grid_coords
from boltzflow.stages.quadrature import quadrature_stage
from boltzflow.systems import Toy2DSystem, kt_kj_mol

SPRING = 300.0  # kJ/mol/nm²


def _gaussian_mass(lo: float, hi: float, sigma: float) -> float:
    """P(lo <= x < hi) of a centred Gaussian of width sigma."""
    return 0.5 * (erf(hi / (sigma * np.sqrt(2))) - erf(lo / (sigma * np.sqrt(2))))


def test_quadrature_of_a_union_of_boxes_is_the_sum_over_its_boxes():
    # Box edges off the grid's cells (width 0.6 / 160 nm), so cells are split fractionally at every edge.
    left = {"x": (-0.25, -0.13), "y": (0.01, 0.2)}
    right = {"x": (0.1, 0.2), "y": (-0.05, 0.13)}
    reference = {"x": (-0.11, 0.085), "y": (-0.3, 0.3)}
    states = (State("reference", (reference,)), State("union", (left, right)))
    system = Toy2DSystem("harmonic", f"0.5*{SPRING}*(x^2 + y^2)", (300.0,), states,
                         bounds={"x": (-0.3, 0.3), "y": (-0.3, 0.3)})
    edges = {cv: np.linspace(-0.3, 0.3, 21) for cv in system.cvs}
    observables = xr.Dataset(coords=grid_coords(system, edges))
    observables["F_xy"] = (("x", "y"), np.zeros((20, 20)))
    estimates = quadrature_stage(system, observables, AnalysisSettings(), log=lambda _: None)

    sigma = np.sqrt(kt_kj_mol(300.0) / SPRING)

    def mass(box):
        return np.prod([_gaussian_mass(*box[cv], sigma) for cv in ("x", "y")])

    expected = -np.log((mass(left) + mass(right)) / mass(reference))
    error = estimates["delta_f_err"].values[0, 1]
    assert abs(estimates["delta_f"].values[0, 1] - expected) <= error + 1e-12 < 2e-3


def test_quadrature_of_adjacent_boxes_equals_that_of_the_merged_box():
    spring = 300.0
    edges = {cv: np.linspace(-0.3, 0.3, 21) for cv in ("x", "y")}

    def delta_f(states):
        system = Toy2DSystem("h", f"0.5*{spring}*(x^2 + y^2)", (300.0,), states, bounds={"x": (-0.3, 0.3), "y": (-0.3, 0.3)})
        observables = xr.Dataset(coords=grid_coords(system, edges))
        observables["F_xy"] = (("x", "y"), np.zeros((20, 20)))
        return quadrature_stage(system, observables, AnalysisSettings(), log=lambda _: None)["delta_f"].values[0, 1]

    reference = State("ref", ({"x": (-0.3, -0.1)},))
    # The shared edge x = 0.013 cuts a grid cell (width 0.03) in two.
    split = State("u", ({"x": (-0.05, 0.013), "y": (-0.3, 0.3)}, {"x": (0.013, 0.2), "y": (-0.3, 0.3)}))
    merged = State("u", ({"x": (-0.05, 0.2), "y": (-0.3, 0.3)},))
    assert delta_f((reference, split)) == pytest.approx(delta_f((reference, merged)), abs=1e-9)
