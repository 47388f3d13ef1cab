"""Workflow stages specific to molecules: replica exchange MD and the internal-coordinate flow.

Same pattern as :mod:`boltzflow.stages` (arrays and settings in, labelled xarray Datasets out); the
per-temperature MD files and the flow samples follow the same contract as the toy systems', so MBAR,
reweighting, the summary and the figures are shared. Positions are Cartesian, [.., atom, spatial] in nm.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from boltzflow.devices import select_device
from boltzflow.stages import _var, train_with_settings
from boltzflow.systems import MoleculeSystem
from boltzflow.units import kt_kj_mol

#: Replica exchange settings taken from the ``md`` config block (the platform is resolved first).
REPLICA_EXCHANGE_KEYS = ("steps_per_exchange", "exchanges", "equilibration_exchanges", "report_interval",
                         "timestep_fs", "friction_per_ps", "seed")


# ---------------------------------------------------------------- replica exchange


def replica_exchange_stage(system: MoleculeSystem, md_settings: dict, log=print, checkpoint_path=None,
                           threads: int = 1) -> xr.Dataset:
    """Temperature replica exchange over the ladder → every recorded frame of every state."""
    from boltzflow.molecules import platform_properties, select_platform
    from boltzflow.replica_exchange import ReplicaExchangeSettings, run_replica_exchange

    molecule = load_system_molecule(system)
    platform = select_platform(md_settings["platform"], molecule, log=log, cpu_threads=threads)
    settings = ReplicaExchangeSettings(**{key: md_settings[key] for key in REPLICA_EXCHANGE_KEYS},
                                       platform=platform, platform_properties=platform_properties(platform, threads))
    log(f"replica exchange of {system.name} ({molecule.n_atoms} atoms) over "
        f"{', '.join(f'{t:g}' for t in system.temperatures_k)} K on {platform}")
    result = run_replica_exchange(molecule.system, molecule.topology, molecule.positions_nm, system.temperatures_k,
                                  settings, log=log, checkpoint_path=checkpoint_path)
    ns = result.steps_integrated * settings.timestep_fs * 1e-6
    ns_per_day = ns / result.wall_seconds * 86400 if result.wall_seconds > 0 else np.nan
    log("exchange acceptance per neighbour pair: " + ", ".join(f"{a:.3f}" for a in result.acceptance))
    n_states = len(system.temperatures_k)
    return xr.Dataset(
        {
            "positions": _var(("temperature", "frame", "atom", "spatial"), result.positions_nm, "nm",
                              "Cartesian positions of the replica in each state"),
            "energy": _var(("temperature", "frame"), result.energy_kj_mol, "kJ/mol", "potential energy"),
            "replica": _var(("temperature", "frame"), result.replica, "1", "replica in the state at the frame"),
            "time": _var("frame", result.time_ps, "ps", "MD time per replica since the start of production"),
            "acceptance": _var("pair", result.acceptance, "1",
                               "fraction of accepted swaps between neighbouring temperatures (pair, pair + 1)"),
            "attempts": _var("pair", result.attempts, "1", "swap attempts per neighbouring pair"),
        },
        coords={"temperature": ("temperature", np.asarray(system.temperatures_k),
                                {"units": "K", "long_name": "temperature of the state"}),
                "pair": ("pair", np.arange(n_states - 1), {"units": "1", "long_name": "neighbour pair index"}),
                "spatial": ["x", "y", "z"]},
        attrs={"platform": platform, "md_wall_seconds": result.wall_seconds,
               "md_ns_per_day_all_replicas": ns_per_day, "timestep_fs": settings.timestep_fs},
    )


def replica_state_stage(system: MoleculeSystem, replicas: xr.Dataset, temperature_k: float, log=print):
    """One temperature of a replica exchange run, in the MD contract of the toy systems.

    Every recorded frame is kept (the flow trains on all of them); ``independent`` marks the subsample
    that MBAR uses, one frame per statistical inefficiency of the slowest of the energy and the
    cosine and sine of each CV along the state's time series.
    """
    from pymbar import timeseries

    k = int(np.argmin(np.abs(replicas["temperature"].values - temperature_k)))
    if not np.isclose(replicas["temperature"].values[k], temperature_k):
        raise ValueError(f"temperature {temperature_k:g} K is not a state of the replica exchange run")
    positions = replicas["positions"].values[k]
    energy = replicas["energy"].values[k]
    cvs = system.cv_values(positions)
    scale = np.pi / 180.0 if system.cv_units == "degrees" else 1.0
    series = [energy] + [f(cvs[cv] * scale) for cv in system.cvs for f in (np.cos, np.sin)]
    inefficiency = max(_statistical_inefficiency(timeseries, s) for s in series)
    kept = timeseries.subsample_correlated_data(np.arange(len(energy)), g=inefficiency)
    independent = np.zeros(len(energy), dtype=np.int8)
    independent[kept] = 1
    log(f"{temperature_k:g} K: {len(energy)} frames, statistical inefficiency {inefficiency:.1f} frames, "
        f"{len(kept)} independent samples for MBAR")
    return xr.Dataset(
        {
            "positions": _var(("sample", "atom", "spatial"), positions, "nm", "Cartesian positions"),
            "energy": _var("sample", energy, "kJ/mol", "potential energy"),
            "cv_values": _var(("sample", "cv"), np.stack([cvs[cv] for cv in system.cvs], axis=1),
                              system.cv_units, "dihedral CVs"),
            "independent": _var("sample", independent, "1", "1 for the decorrelated subsample used by MBAR"),
            "replica": _var("sample", replicas["replica"].values[k], "1", "replica in this state at the frame"),
            "time": _var("sample", replicas["time"].values, "ps", "MD time per replica"),
        },
        coords={"cv": list(system.cvs), "spatial": ["x", "y", "z"]},
        attrs={"temperature_k": float(temperature_k), "statistical_inefficiency_frames": inefficiency},
    )


def _statistical_inefficiency(timeseries, values: np.ndarray) -> float:
    # A constant series (e.g. a CV that never moves) has no defined inefficiency; it constrains nothing.
    if np.ptp(values) == 0:
        return 1.0
    return float(timeseries.statistical_inefficiency(values, fast=False, mintime=3))


# ---------------------------------------------------------------- Boltzmann generator


FLOW_ARCHITECTURE = ("n_layers", "hidden", "n_hidden_layers", "n_bins", "tail_bound")

#: A torsion whose MD samples have a mean resultant length |E[exp(iθ)]| above this (a circular standard
#: deviation below about 25°) is modelled as a real number around its circular mean, not on the circle.
NARROW_TORSION_RESULTANT = 0.9


def fit_molecule_flow(system: MoleculeSystem, target_md: xr.Dataset, settings: dict, log=print,
                      checkpoint_path=None, energy_workers: int = 1):
    """Train a Boltzmann generator on every target-temperature MD frame → (model, curves).

    Maximum likelihood on the internal coordinates, plus ``energy_weight`` × the reverse KL to the
    internal-coordinate target u(x(ic)) - J(ic) when ``energy_weight > 0`` (energies and forces by OpenMM).
    """
    import torch

    from boltzflow.flows import MixedSplineCouplingFlow
    from boltzflow.generators import BoltzmannGenerator
    from boltzflow.molecules import EnergyEvaluator, reduced_energy_function

    device = select_device(settings["device"], log=log)
    torch.manual_seed(settings["seed"])
    molecule, zmatrix, coordinates, ic = molecule_internal_coordinates(system, target_md["positions"].values)
    # Torsions whose MD distribution spans the circle stay circular; narrow ones are unwrapped around
    # their circular mean (see BoltzmannGenerator).
    mean_angle, resultant = circular_statistics(ic)
    torsion = coordinates.is_torsion
    narrow = torsion & (resultant > NARROW_TORSION_RESULTANT)
    circular = torsion & ~narrow
    window_centre = torch.where(narrow, mean_angle, torch.full_like(mean_angle, float("nan")))
    generator = BoltzmannGenerator(zmatrix, None, window_centre)
    data64 = generator.flow_coordinates(ic)
    data = data64.to(torch.get_default_dtype())
    loc = torch.where(circular, torch.zeros_like(data[0]), data.mean(0))
    scale = torch.where(circular, torch.ones_like(data[0]), data.std(0).clamp_min(1e-6))
    circular_loc = torch.where(circular, mean_angle.to(data.dtype), torch.zeros_like(data[0]))
    flow = MixedSplineCouplingFlow(dim=coordinates.dim, circular=circular.tolist(), loc=loc, scale=scale,
                                   circular_loc=circular_loc, **{key: settings[key] for key in FLOW_ARCHITECTURE})
    generator.flow = flow
    log(f"training a Boltzmann generator on {len(data)} MD frames at {system.target_temperature_k:g} K: "
        f"{coordinates.dim} internal coordinates ({int(torsion.sum())} torsions: {int(circular.sum())} circular, "
        f"{int(narrow.sum())} narrow ones unwrapped), {sum(p.numel() for p in flow.parameters())} parameters")

    # OpenMM energies for the energy term (if on) and for the ESS monitor at every record.
    evaluator = EnergyEvaluator(molecule, platform="Reference", n_workers=energy_workers)
    reduced_energy = generator.reduced_energy_internal(
        reduced_energy_function(evaluator, kt_kj_mol(system.target_temperature_k)))
    try:
        curves = train_with_settings(flow.to(device), data.to(device), reduced_energy, settings, log, checkpoint_path)
    finally:
        evaluator.close()
    generator.flow = flow.cpu()
    return generator, curves


def molecule_sample_stage(system: MoleculeSystem, generator, settings: dict, log=print, energy_workers: int = 1):
    """Draw Cartesian samples from a Boltzmann generator; energies by OpenMM in batches."""
    from boltzflow.molecules import EnergyEvaluator, reduced_energy_function
    from boltzflow.samplers import sample_flow
    from boltzflow.stages import samples_dataset

    generator = generator.to(select_device(settings["device"], log=log))
    molecule = load_system_molecule(system)
    with EnergyEvaluator(molecule, platform="Reference", n_workers=energy_workers) as evaluator:
        reduced_energy = reduced_energy_function(evaluator, kt_kj_mol(system.target_temperature_k))
        x, log_q, u = sample_flow(generator, reduced_energy, settings["n_samples"], settings["seed"],
                                  settings["batch_size"], log=log)
        log(f"OpenMM energies: {evaluator.samples_per_second:,.0f} samples/s with {energy_workers} worker(s)")
    return samples_dataset(system, x, log_q, u)


def molecule_internal_coordinates(system: MoleculeSystem, positions_nm):
    """(molecule, Z-matrix, InternalCoordinates, internal coordinates [n, 3 n_atoms - 6] in float64) of
    Cartesian positions [n, n_atoms, 3] of a molecule system; the Z-matrix comes from its bonds."""
    import torch

    from boltzflow.coordinates import InternalCoordinates, build_zmatrix

    molecule = load_system_molecule(system)
    zmatrix = build_zmatrix(molecule.bonds, molecule.n_atoms, heavy=molecule.heavy)
    coordinates = InternalCoordinates(zmatrix)
    ic, _, _ = coordinates.to_internal(torch.as_tensor(positions_nm, dtype=torch.float64))
    return molecule, zmatrix, coordinates, ic


def circular_statistics(angles):
    """(circular mean in (-π, π], mean resultant length |E[exp(iθ)]|) of each column of angles [n, d]."""
    import torch

    mean_cos, mean_sin = angles.cos().mean(0), angles.sin().mean(0)
    return torch.atan2(mean_sin, mean_cos), torch.sqrt(mean_cos**2 + mean_sin**2)


def load_system_molecule(system: MoleculeSystem):
    """The OpenMM side of a molecule system (topology, System, PDB positions)."""
    from boltzflow.molecules import load_molecule

    return load_molecule(system.pdb_path, system.forcefield, system.constraints)
