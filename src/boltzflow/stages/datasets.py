"""The dataset contract shared by the stages: labelled variables, CV grids and model-sample files."""

from __future__ import annotations

import numpy as np
import xarray as xr

from boltzflow import estimators


def variable(dims, data, units: str, long_name: str):
    """An xarray variable tuple with the ``units`` and ``long_name`` every output variable carries."""
    return (dims, np.asarray(data), {"units": units, "long_name": long_name})


def surface_name(system) -> str:
    """Variable name of the 2D free-energy surface over the first two CVs: F_xy, F_phipsi, ..."""
    return "F_" + "".join(system.cvs[:2])


def grid_coords(system, edges: dict[str, np.ndarray]) -> dict:
    """Coordinates shared by every estimate: state names, bin centres and bin edges per CV."""
    coords = {"state": [s.name for s in system.states]}
    for cv, cv_edges in edges.items():
        coords[cv] = (cv, 0.5 * (cv_edges[1:] + cv_edges[:-1]),
                      {"units": system.cv_units, "long_name": f"{cv} bin centre"})
        coords[f"{cv}_edges"] = (f"{cv}_edge", cv_edges, {"units": system.cv_units, "long_name": f"{cv} bin edges"})
    return coords


def edges_from(observables: xr.Dataset, cv: str) -> np.ndarray:
    return observables[f"{cv}_edges"].values


def samples_dataset(system, x, log_q, u) -> xr.Dataset:
    """Model samples with ln q, u, the log-weights and the CVs; x is [n, *system.position_dims] in nm."""
    log_w, n_nonfinite = estimators.log_weights(u, log_q)
    x = np.asarray(x)
    dataset = xr.Dataset(
        {
            "positions": variable(("sample", *system.position_dims), x, "nm", system.positions_long_name),
            "log_q": variable("sample", log_q, "1", system.log_q_long_name),
            "reduced_energy": variable("sample", u, "1", "reduced energy u = E / kT at the target temperature"),
            "log_w": variable("sample", log_w, "1", "log importance weight -u - ln q (-inf: non-finite, dropped)"),
        },
        coords=system.position_coords,
        attrs={"n_nonfinite": n_nonfinite, "temperature_k": system.target_temperature_k},
    )
    if system.cvs:
        values = system.cv_values(x)
        dataset["cv_values"] = variable(("sample", "cv"), np.stack([values[cv] for cv in system.cvs], axis=1)
                                        .reshape(len(x), len(system.cvs)), system.cv_units, "CVs of the sample")
        dataset = dataset.assign_coords(cv=list(system.cvs))
    return dataset


def weighted_samples_dataset(system, positions, log_w, u, log_w_long_name: str) -> xr.Dataset:
    """Samples whose weights do not come from a log q (SMC, MCMC), in the samples contract (log_q NaN)."""
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    dataset = samples_dataset(system, positions, np.full(len(log_w), np.nan), u)
    dataset["log_w"] = variable("sample", log_w, "1", log_w_long_name)
    dataset["log_q"].attrs["long_name"] = "not defined for this sampler (NaN)"
    dataset.attrs["n_nonfinite"] = int(np.sum(~np.isfinite(log_w)))
    return dataset


def surface_effective_name(system) -> str:
    """Variable name of the effective samples per bin of the 2D surface: n_eff_xy, n_eff_phipsi, ..."""
    return "n_eff_" + "".join(system.cvs[:2])
