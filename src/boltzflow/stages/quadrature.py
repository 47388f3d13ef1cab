"""The exact answer of a 2D system by quadrature: state free energies, ln Z, profiles and the surface.

A toy's target density exp(-u(x, y)) can be integrated on a grid, so every toy run carries its own truth
(estimator ``quadrature``) beside MBAR and the models. The grid refines each histogram bin of the MBAR grid
into ``SUBDIVISIONS`` × ``SUBDIVISIONS`` cells (so bin probabilities are sums over whole cells) and extends
beyond it until the density at the domain's edge is negligible. The standard error reported is the
discretization error: the difference to the same rule at half the resolution.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy.special import logsumexp

from boltzflow import estimators
from boltzflow.settings import AnalysisSettings
from boltzflow.stages.datasets import edges_from, grid_coords, surface_effective_name, surface_name, variable
from boltzflow.stages.reweight import divergence_long_name, surface_divergences

SUBDIVISIONS = 8
#: The domain grows until exp(-(u_edge - u_min)) falls below exp(-EDGE_KT) all along its edge.
EDGE_KT = 30.0
#: Each extension adds half the grid's range on every side (so at most 5 times the range, 4M cells at 50 bins).
MAX_EXTENSIONS = 4


class QuadratureError(ValueError):
    """The density does not vanish within any domain tried (an energy unbounded below, or too flat)."""


def _overlap(centres: np.ndarray, h: float, lo: float, hi: float) -> np.ndarray:
    """Fraction of each cell [c - h/2, c + h/2] inside [lo, hi): state boxes need not align with cells."""
    return np.clip((np.minimum(centres + h / 2, hi) - np.maximum(centres - h / 2, lo)) / h, 0.0, 1.0)


def _state_log_mass(system, points: np.ndarray, h: dict[str, float], log_mass: np.ndarray) -> np.ndarray:
    """ln P of each state, with each cell counted by the fraction of it inside the state's boxes."""
    cvs = system.cv_values(points)
    result = []
    for state in system.states:
        # The boxes of a state are disjoint (boltzflow.cvs.state_boxes checks it), so their fractions add up.
        fraction = np.zeros(len(points))
        for box in state.boxes:
            box_fraction = np.ones(len(points))
            for cv, (lo, hi) in box.items():
                box_fraction *= _overlap(cvs[cv], h[cv], lo, hi)
            fraction += box_fraction
        with np.errstate(divide="ignore"):
            result.append(logsumexp(log_mass + np.log(fraction)))
    return np.array(result)


def _axis(edges: np.ndarray, subdivisions: int, extra_cells: int) -> tuple[np.ndarray, float]:
    """Cell midpoints of a uniform grid aligned with ``edges`` and ``extra_cells`` cells beyond each end."""
    h = (edges[1] - edges[0]) / subdivisions
    n = (len(edges) - 1) * subdivisions + 2 * extra_cells
    return edges[0] + (np.arange(n) - extra_cells + 0.5) * h, h


def _grid(system, edges: dict[str, np.ndarray], subdivisions: int, extra: dict[str, int]):
    first, second = system.cvs[:2]
    x, hx = _axis(edges[first], subdivisions, extra[first])
    y, hy = _axis(edges[second], subdivisions, extra[second])
    xx, yy = np.meshgrid(x, y, indexing="ij")
    points = np.stack([xx.ravel(), yy.ravel()], axis=1)
    u = system.reduced_energy(points).reshape(xx.shape)
    return points, u, {first: hx, second: hy}


def _edge_gap(u: np.ndarray) -> float:
    """How far (kT) the lowest energy on the domain's edge lies above the minimum inside."""
    edge = np.concatenate([u[0], u[-1], u[:, 0], u[:, -1]])
    finite = u[np.isfinite(u)]
    # +inf (a hard wall) is a density that vanishes; NaN or -inf is one that does not.
    if len(finite) == 0 or np.isnan(edge).any() or (edge == -np.inf).any():
        return -np.inf
    return float(edge.min() - finite.min())


def quadrature_stage(system, observables: xr.Dataset, settings: AnalysisSettings, log=print) -> xr.Dataset:
    """The exact estimates of ``system`` (2D, positions = CVs) on the MBAR grid, in the estimates format."""
    edges = {cv: edges_from(observables, cv) for cv in system.cvs}
    # Extend by whole histogram bins on every side until the density at the domain's edge is negligible.
    extra = {cv: 0 for cv in system.cvs}
    for _attempt in range(MAX_EXTENSIONS + 1):
        points, u, cell = _grid(system, edges, SUBDIVISIONS, extra)
        gap = _edge_gap(u)
        if gap > EDGE_KT:
            break
        extra = {cv: extra[cv] + (len(edges[cv]) - 1) * SUBDIVISIONS // 2 for cv in system.cvs}
    else:
        raise QuadratureError(
            f"{system.name}: quadrature: the density exp(-u) does not vanish at the edge of any domain tried "
            f"(edge {gap:.1f} kT above the minimum, needed > {EDGE_KT:g}); is the energy bounded below?")
    log(f"quadrature on {u.shape[0]} x {u.shape[1]} cells (domain edge {gap:.1f} kT above the minimum)")

    def estimates(subdivisions: int) -> np.ndarray:
        grid_points, grid_u, grid_cell = (points, u, cell) if subdivisions == SUBDIVISIONS else _grid(
            system, edges, subdivisions, {cv: n * subdivisions // SUBDIVISIONS for cv, n in extra.items()})
        # A grid cell is a sample whose log-weight is its log-mass: the reweighting estimators then give
        # the midpoint-rule integrals over the histogram bins (aligned with the cells).
        log_mass = np.where(np.isfinite(grid_u), -grid_u, -np.inf).ravel() + np.log(np.prod(list(grid_cell.values())))
        cvs = system.cv_values(grid_points)
        state_log_mass = _state_log_mass(system, grid_points, grid_cell, log_mass)
        with np.errstate(invalid="ignore"):
            delta_f = state_log_mass[0] - state_log_mass
        parts = [delta_f, [float(logsumexp(log_mass))]]
        parts += [estimators.weighted_profile(cvs[cv], log_mass, edges[cv]) for cv in system.cvs]
        first, second = system.cvs[:2]
        surface = estimators.weighted_surface(cvs[first], cvs[second], log_mass, edges[first], edges[second])
        return np.concatenate(parts), surface

    values, surface = estimates(SUBDIVISIONS)
    coarse, _ = estimates(SUBDIVISIONS // 2)
    with np.errstate(invalid="ignore"):
        errors = np.abs(values - coarse)
    n_states = len(system.states)
    log("quadrature ΔF: " + ", ".join(f"{s.name} {v:.4f} ± {e:.1e} kT"
                                      for s, v, e in zip(system.states, values, errors)))
    error_name = "discretization error (difference to half the resolution)"
    dataset = xr.Dataset(coords={**grid_coords(system, edges), "estimator": ["quadrature"]})
    dataset["delta_f"] = variable(("estimator", "state"), [values[:n_states]], "kT",
                                  "state free energy relative to the first state")
    dataset["delta_f_err"] = variable(("estimator", "state"), [errors[:n_states]], "kT", f"{error_name} of delta_f")
    dataset["log_z"] = variable("estimator", [values[n_states]], "1", system.log_z_long_name)
    dataset["log_z_err"] = variable("estimator", [errors[n_states]], "1", f"{error_name} of log_z")
    start = n_states + 1
    for cv in system.cvs:
        stop = start + len(edges[cv]) - 1
        dataset[f"F_{cv}"] = variable(("estimator", cv), [values[start:stop]], "kT",
                                      f"free-energy profile -ln(p / bin width) along {cv}")
        dataset[f"dF_{cv}"] = variable(("estimator", cv), [errors[start:stop]], "kT", f"{error_name} of F_{cv}")
        dataset[f"n_eff_{cv}"] = variable(("estimator", cv), [np.full(stop - start, np.inf)], "1",
                                          "effective samples in the bin (inf: exact)")
        start = stop
    first, second = system.cvs[:2]
    dataset[surface_name(system)] = variable(("estimator", first, second), [surface], "kT",
                                             f"free-energy surface -ln(p / bin area) over ({first}, {second})")
    dataset[surface_effective_name(system)] = variable(("estimator", first, second), [np.full(surface.shape, np.inf)],
                                                           "1", "effective samples in the bin (inf: exact)")
    kl, js = surface_divergences(observables, system, surface, settings)
    dataset["kl_divergence"] = variable("estimator", [kl], "1", divergence_long_name("KL", system, settings))
    dataset["js_divergence"] = variable("estimator", [js], "1", divergence_long_name("JS", system, settings))
    return dataset
