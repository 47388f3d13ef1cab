"""The MBAR reference: reduced free energies over the temperature ladder, and state free energies,
profiles and the 2D surface at the target temperature."""

from __future__ import annotations

import numpy as np
import xarray as xr

from boltzflow import estimators
from boltzflow.physics_errors import PhysicsError
from boltzflow.stages.datasets import grid_coords, surface_effective_name, surface_name, variable
from boltzflow.units import kt_kj_mol

#: Above this share of the target ensemble in no state (MBAR), the log warns. Between metastable basins
#: lie only the barrier regions, which hold a few percent at most; more than that means the states miss a
#: basin (or the far side of a dihedral's ±180°), and ΔF between the states listed hides it.
NO_STATE_WARNING_FRACTION = 0.05


def grid_edges(system, positions: np.ndarray, bins: int) -> dict[str, np.ndarray]:
    """Histogram edges per CV: the configured bounds, else the sampled range of the target-temperature MD."""
    edges = {}
    values = system.cv_values(positions)
    for cv in system.cvs:
        if system.bounds and cv in system.bounds:
            lo, hi = system.bounds[cv]
        else:
            lo, hi = np.quantile(values[cv], [0.0005, 0.9995])
            margin = 0.05 * (hi - lo)
            lo, hi = lo - margin, hi + margin
        edges[cv] = np.linspace(lo, hi, bins + 1)
    return edges


class MDFileError(ValueError):
    """An MD file does not belong where it was given (another temperature); the message names the file."""


def check_ladder(system, md: list[xr.Dataset], names: list[str]) -> None:
    """Each MD dataset's ``temperature_k`` attribute must be the ladder temperature at its place.

    MBAR pairs each file's samples with its place in ``system.temperatures_k``; a file of another
    temperature there (a stale file, a reordered input) would give wrong free energies without a sign.
    """
    ladder = list(system.temperatures_k)
    if len(md) != len(ladder):
        raise MDFileError(f"MBAR of {system.name}: {len(md)} MD files for a ladder of {len(ladder)} "
                          f"temperatures ({', '.join(f'{t:g}' for t in ladder)} K)")
    for dataset, name, temperature_k in zip(md, names, ladder):
        recorded = dataset.attrs.get("temperature_k")
        if recorded is None:
            raise MDFileError(f"{name}: no temperature_k attribute; expected an MD file at {temperature_k:g} K")
        if not np.isclose(float(recorded), temperature_k, rtol=0, atol=1e-6):
            raise MDFileError(f"{name}: MD at {float(recorded):g} K given for the ladder temperature "
                              f"{temperature_k:g} K (ladder {', '.join(f'{t:g}' for t in ladder)} K)")


def mbar_stage(system, md: list[xr.Dataset], bins: int, log=print, names: list[str] | None = None):
    """MBAR over the ladder → (ladder free energies, reference observables at the target temperature).

    ``md`` holds one dataset per temperature of the ladder, in ladder order (first = target), each
    recording its ``temperature_k`` (checked: :class:`MDFileError` naming the file, from ``names``, the
    input paths). Files of decorrelated samples (toy walkers) enter MBAR as they are. Files that keep every
    frame and mark an ``independent`` subsample (replica exchange) enter with every frame, and every
    standard error and effective sample count is scaled by the largest statistical inefficiency g of the
    files (frames per independent sample; √g on errors, 1/g on counts): MBAR's estimate is consistent on
    correlated frames and far less noisy than on the few independent ones, while its asymptotic errors
    would assume every frame independent. A non-finite energy or a failure of pymbar raises a one-line
    :class:`~boltzflow.physics_errors.PhysicsError`.
    """
    names = names or [f"MD dataset {i} ({t:g} K)" for i, t in enumerate(system.temperatures_k)]
    check_ladder(system, md, names)
    correlated = any("independent" in ds for ds in md)
    g = max(float(ds.attrs.get("statistical_inefficiency_frames", 1.0)) for ds in md) if correlated else 1.0
    g = max(g, 1.0)
    energies = [ds["energy"].values for ds in md]
    for name, energy in zip(names, energies):
        if not np.isfinite(energy).all():
            raise PhysicsError(f"MBAR of {system.name}: {int((~np.isfinite(energy)).sum())} of {len(energy)} "
                               f"samples in {name} have a non-finite energy")
    positions = np.concatenate([ds["positions"].values for ds in md])
    pooled = np.concatenate(energies)
    temperatures = np.array(system.temperatures_k)
    u_kn = pooled[None, :] / kt_kj_mol(temperatures)[:, None]
    n_k = np.array([len(e) for e in energies])
    log(f"MBAR on {n_k.sum()} samples over {len(n_k)} temperatures: N_k = {n_k.tolist()}"
        + (f"; errors scaled by the statistical inefficiency g = {g:.1f} frames (about {n_k.sum() / g:.0f} "
           "independent samples)" if correlated else ""))
    try:
        mbar = estimators.build_mbar(u_kn, n_k)
        f, df = estimators.mbar_ladder_free_energies(mbar)
    # pymbar fails with several exception types (ParameterError, LinAlgError, ValueError, ...); each
    # means the same to a user: the MD does not support an MBAR estimate.
    except Exception as error:
        reason = (str(error).strip().splitlines() or [""])[0]
        raise PhysicsError(f"MBAR of {system.name} over {', '.join(f'{t:g}' for t in temperatures)} K failed: "
                           f"{type(error).__name__}: {reason}") from None
    scale = np.sqrt(g)
    ladder = xr.Dataset(
        {"f": variable("temperature", f, "1", "reduced free energy -ln Z relative to the first temperature"),
         "df": variable("temperature", df * scale, "1", "standard error of f")},
        coords={"temperature": ("temperature", temperatures, {"units": "K", "long_name": "temperature"})},
    )
    ladder.attrs["statistical_inefficiency_frames"] = g

    u_target = u_kn[0]
    cvs = system.cv_values(positions)
    delta_f, delta_f_err = estimators.mbar_state_delta_f(mbar, u_target, cvs, system.states)
    delta_f_err = delta_f_err * scale
    log("MBAR ΔF at target: " + ", ".join(
        f"{s.name} {v:.3f} ± {e:.3f} kT" for s, v, e in zip(system.states, delta_f, delta_f_err)))
    edges = grid_edges(system, md[0]["positions"].values, bins)
    observables = xr.Dataset(
        {"delta_f": variable("state", delta_f, "kT", "state free energy relative to the first state"),
         "delta_f_err": variable("state", delta_f_err, "kT", "standard error of delta_f")},
        coords=grid_coords(system, edges),
    )
    log_w_target = np.log(mbar.weights()[:, 0])
    observables["fraction_in_no_state"] = variable((), _fraction_in_no_state(system, log_w_target, cvs, log), "1",
                                                   f"MBAR probability at {system.target_temperature_k:g} K of "
                                                   "lying in none of the states")
    counted = "Kish effective samples of the MBAR weights in the {}, over the statistical inefficiency"
    observables["n_eff_state"] = variable("state", [
        estimators.effective_samples(np.where(state.contains(cvs), log_w_target, -np.inf)) / g
        for state in system.states], "1", counted.format("state"))
    for cv in system.cvs:
        profile, error = estimators.mbar_profile(mbar, u_target, cvs[cv], edges[cv])
        observables[f"F_{cv}"] = variable(cv, profile, "kT", f"free-energy profile -ln(p / bin width) along {cv}")
        observables[f"dF_{cv}"] = variable(cv, error * scale, "kT", f"standard error of F_{cv} (MBAR)")
        index = estimators.bin_index(cvs[cv], edges[cv])
        observables[f"n_eff_{cv}"] = variable(cv, estimators.binned_effective_samples(
            index, log_w_target, len(edges[cv]) - 1) / g, "1", counted.format("bin"))
    first, second = system.cvs[:2]
    surface = estimators.weighted_surface(cvs[first], cvs[second], log_w_target, edges[first], edges[second])
    observables[surface_name(system)] = variable(system.cvs[:2], surface, "kT",
                                             f"free-energy surface -ln(p / bin area) over ({first}, {second})")
    n_first, n_second = len(edges[first]) - 1, len(edges[second]) - 1
    flat = estimators.surface_bin_index(cvs[first], cvs[second], edges[first], edges[second])
    observables[surface_effective_name(system)] = variable(system.cvs[:2], estimators.binned_effective_samples(
        flat, log_w_target, n_first * n_second).reshape(n_first, n_second) / g, "1", counted.format("bin"))
    observables.attrs["n_samples"] = int(n_k.sum())
    observables.attrs["statistical_inefficiency_frames"] = g
    return ladder, observables


def _fraction_in_no_state(system, log_w_target: np.ndarray, cvs: dict[str, np.ndarray], log) -> float:
    """The MBAR probability at the target of lying in no state, with a warning in the log above the threshold."""
    fraction = estimators.probability_in_no_state(log_w_target, cvs, system.states)
    if fraction > NO_STATE_WARNING_FRACTION:
        log(f"WARNING: {100 * fraction:.0f} % of the {system.target_temperature_k:g} K ensemble (MBAR) lies in no "
            f"state of {system.name}; ΔF only compares the states listed")
    return fraction
