"""One function per workflow stage: arrays and settings in, labelled xarray Datasets out.

The Snakemake scripts are thin adapters around these functions (read inputs, call, write outputs), so each
stage can also be run and tested without Snakemake. Variable names and units here are the output contract
documented in the README.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from boltzflow import estimators
from boltzflow.devices import select_device
from boltzflow.md import LangevinSettings, decorrelate, run_langevin
from boltzflow.systems import Toy2DSystem, kt_kj_mol


def _var(dims, data, units: str, long_name: str):
    return (dims, np.asarray(data), {"units": units, "long_name": long_name})


# ---------------------------------------------------------------- MD


def md_stage(system: Toy2DSystem, temperature_k: float, settings: LangevinSettings, log=print,
             checkpoint_path=None):
    """Langevin MD at one temperature of the ladder → decorrelated samples with their energies."""
    trajectory = run_langevin(system, temperature_k, settings, log=log, checkpoint_path=checkpoint_path)
    samples = decorrelate(system, trajectory)
    log(f"kept {len(samples.energy_kj_mol)} samples: discarded {samples.equilibration_frames} "
        f"transient frames, statistical inefficiency {samples.statistical_inefficiency:.1f} frames")
    # Only the steps this call integrated: after a resume, the wall time covers the rest of the run only.
    total_steps = settings.walkers * trajectory.steps_run
    ns_per_day = total_steps * settings.timestep_fs * 1e-6 / trajectory.wall_seconds * 86400
    return xr.Dataset(
        {
            "positions": _var(("sample", "cv"), samples.positions_nm, "nm", "walker position"),
            "energy": _var("sample", samples.energy_kj_mol, "kJ/mol", "potential energy E(x, y)"),
            "walker": _var("sample", samples.walker, "1", "walker index"),
            "time": _var("sample", samples.time_ps, "ps", "simulation time of the sample"),
        },
        coords={"cv": list(system.cvs)},
        attrs={
            "temperature_k": trajectory.temperature_k,
            "equilibration_frames": samples.equilibration_frames,
            "statistical_inefficiency_frames": samples.statistical_inefficiency,
            "md_wall_seconds": trajectory.wall_seconds,
            "md_ns_per_day_all_walkers": ns_per_day,
        },
    )


# ---------------------------------------------------------------- MBAR reference


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


def surface_name(system) -> str:
    """Variable name of the 2D free-energy surface over the first two CVs: F_xy, F_phipsi, ..."""
    return "F_" + "".join(system.cvs[:2])


def cv_units(system) -> str:
    return getattr(system, "cv_units", "nm")


def independent_samples(md: xr.Dataset) -> xr.Dataset:
    """The effectively independent samples of an MD file (all of them unless it marks a subset)."""
    if "independent" in md:
        return md.isel(sample=md["independent"].values.astype(bool))
    return md


def mbar_stage(system, md: list[xr.Dataset], bins: int, log=print):
    """MBAR over the ladder → (ladder free energies, reference observables at the target temperature).

    ``md`` holds one dataset per temperature of the ladder (first = target); only their independent
    samples enter MBAR, and so state ΔF and every standard error. Where the files hold more frames than
    that (replica exchange keeps every frame), the surface and the profile values are histograms of all
    frames with MBAR weights from the same free energies: the same estimate, far less bin noise.
    """
    all_frames = md
    md = [independent_samples(ds) for ds in md]
    energies = [ds["energy"].values for ds in md]
    positions = np.concatenate([ds["positions"].values for ds in md])
    pooled = np.concatenate(energies)
    temperatures = np.array(system.temperatures_k)
    u_kn = pooled[None, :] / kt_kj_mol(temperatures)[:, None]
    n_k = np.array([len(e) for e in energies])
    log(f"MBAR on {n_k.sum()} samples over {len(n_k)} temperatures: N_k = {n_k.tolist()}")
    mbar = estimators.build_mbar(u_kn, n_k)
    f, df = estimators.mbar_ladder_free_energies(mbar)
    ladder = xr.Dataset(
        {"f": _var("temperature", f, "1", "reduced free energy -ln Z relative to the first temperature"),
         "df": _var("temperature", df, "1", "standard error of f")},
        coords={"temperature": ("temperature", temperatures, {"units": "K", "long_name": "temperature"})},
    )

    u_target = u_kn[0]
    cvs = subsample_cvs = system.cv_values(positions)
    delta_f, delta_f_err = estimators.mbar_state_delta_f(mbar, u_target, cvs, system.states)
    log("MBAR ΔF at target: " + ", ".join(
        f"{s.name} {v:.3f} ± {e:.3f} kT" for s, v, e in zip(system.states, delta_f, delta_f_err)))
    edges = grid_edges(system, md[0]["positions"].values, bins)
    observables = xr.Dataset(
        {"delta_f": _var("state", delta_f, "kT", "state free energy relative to the first state"),
         "delta_f_err": _var("state", delta_f_err, "kT", "standard error of delta_f")},
        coords=_grid_coords(system, edges),
    )
    log_w_target = np.log(mbar.weights()[:, 0])
    if sum(ds.sizes["sample"] for ds in all_frames) > n_k.sum():
        energies_all = np.concatenate([ds["energy"].values for ds in all_frames])
        u_all = energies_all[None, :] / kt_kj_mol(temperatures)[:, None]
        counts = np.array([ds.sizes["sample"] for ds in all_frames])
        log_w_target = estimators.mbar_log_weights(mbar, u_all, counts, u_all[0])
        cvs = system.cv_values(np.concatenate([ds["positions"].values for ds in all_frames]))
        log(f"surfaces and profile values from all {counts.sum()} frames with the MBAR free energies")
    for cv in system.cvs:
        profile, error = estimators.mbar_profile(mbar, u_target, subsample_cvs[cv], edges[cv])
        if len(log_w_target) > len(u_target):
            profile = estimators.weighted_profile(cvs[cv], log_w_target, edges[cv])
        observables[f"F_{cv}"] = _var(cv, profile, "kT", f"free-energy profile along {cv}")
        observables[f"dF_{cv}"] = _var(cv, error, "kT", f"standard error of F_{cv} (MBAR, decorrelated samples)")
    first, second = system.cvs[:2]
    surface = estimators.weighted_surface(cvs[first], cvs[second], log_w_target, edges[first], edges[second])
    observables[surface_name(system)] = _var(system.cvs[:2], surface, "kT",
                                             f"free-energy surface -ln p({first}, {second})")
    observables.attrs["n_samples"] = int(n_k.sum())
    return ladder, observables


def _grid_coords(system, edges: dict[str, np.ndarray]) -> dict:
    """Coordinates shared by every estimate: state names, bin centres and bin edges per CV."""
    units = cv_units(system)
    coords = {"state": [s.name for s in system.states]}
    for cv, cv_edges in edges.items():
        coords[cv] = (cv, 0.5 * (cv_edges[1:] + cv_edges[:-1]), {"units": units, "long_name": f"{cv} bin centre"})
        coords[f"{cv}_edges"] = (f"{cv}_edge", cv_edges, {"units": units, "long_name": f"{cv} bin edges"})
    return coords


def edges_from(observables: xr.Dataset, cv: str) -> np.ndarray:
    return observables[f"{cv}_edges"].values


# ---------------------------------------------------------------- flow


FLOW_ARCHITECTURE = ("n_layers", "hidden", "n_hidden_layers", "n_bins", "tail_bound")

#: Flow samples drawn at every training record to follow ESS/N over training (fixed noise).
ESS_MONITOR_SAMPLES = 2000


def fit_flow(system: Toy2DSystem, target_md: xr.Dataset, settings: dict, log=print, checkpoint_path=None):
    """Train a spline coupling flow on the target-temperature MD samples → (model, curves).

    The flow standardizes by the data mean and standard deviation; the reverse-KL term uses the reduced
    energy at the target temperature and is on only when ``energy_weight > 0``. With ``checkpoint_path``
    an interrupted training resumes where it stopped.
    """
    import torch

    from boltzflow.flows import SplineCouplingFlow

    device = select_device(settings["device"], log=log)
    torch.manual_seed(settings["seed"])
    data = torch.as_tensor(target_md["positions"].values, dtype=torch.float32)
    model = SplineCouplingFlow(
        dim=system.dim, loc=data.mean(0), scale=data.std(0),
        **{key: settings[key] for key in FLOW_ARCHITECTURE}).to(device)
    log(f"training flow on {len(data)} MD samples at {system.target_temperature_k:g} K: "
        f"{sum(p.numel() for p in model.parameters())} parameters")

    def reduced_energy(x):
        return system.reduced_energy(x.double()).to(x.dtype)

    curves = train_with_settings(model, data, reduced_energy, settings, log, checkpoint_path)
    return model.cpu(), curves


def train_with_settings(model, data, reduced_energy, settings: dict, log, checkpoint_path):
    """``train_flow`` with the ``flow:`` config block's settings and the ESS monitor on."""
    from boltzflow.training import train_flow

    return train_flow(
        model, data, reduced_energy=reduced_energy, ess_samples=ESS_MONITOR_SAMPLES,
        steps=settings["steps"], batch_size=settings["batch_size"], learning_rate=settings["learning_rate"],
        energy_weight=settings["energy_weight"], validation_fraction=settings["validation_fraction"],
        seed=settings["seed"], log=log, checkpoint_path=checkpoint_path)


def save_flow(model, path) -> None:
    """Architecture and weights in one file, readable with ``torch.load(weights_only=True)``."""
    import torch

    from boltzflow.io import atomic_path

    kind = "toy" if isinstance(model, _toy_flow_class()) else "molecule"
    with atomic_path(path) as temporary:
        torch.save({"kind": kind, "config": model.config, "state_dict": model.state_dict()}, temporary)


def load_flow(path):
    """A SplineCouplingFlow (toy systems) or a BoltzmannGenerator (molecules), in eval mode."""
    import torch

    from boltzflow.generators import BoltzmannGenerator

    saved = torch.load(path, weights_only=True, map_location="cpu")
    if saved.get("kind", "toy") == "molecule":
        model = BoltzmannGenerator.from_config(saved["config"])
    else:
        model = _toy_flow_class()(**saved["config"])
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def _toy_flow_class():
    from boltzflow.flows import SplineCouplingFlow

    return SplineCouplingFlow


def sample_stage(system: Toy2DSystem, model, settings: dict, log=print) -> xr.Dataset:
    """Draw flow samples and their reduced energies at the target temperature."""
    from boltzflow.samplers import sample_flow

    model = model.to(select_device(settings["device"], log=log))
    x, log_q, u = sample_flow(model, system.reduced_energy, settings["n_samples"], settings["seed"],
                              settings["batch_size"], log=log)
    return samples_dataset(system, x, log_q, u)


def curves_dataset(curves: dict) -> xr.Dataset:
    return xr.Dataset(
        {
            "train_nll": _var("step", curves["train_nll"], "1", "training negative log-likelihood per sample"),
            "validation_nll": _var("step", curves["validation_nll"], "1",
                                   "validation negative log-likelihood per sample"),
            "reverse_kl": _var("step", curves["reverse_kl"], "1",
                               "reverse KL term E_q[u + ln q] (up to ln Z; NaN if unused)"),
            "ess_fraction": _var("step", curves["ess_fraction"], "1",
                                 "Kish ESS / N of monitor samples from the flow at that step"),
            "learning_rate": _var("step", curves["learning_rate"], "1", "learning rate"),
        },
        coords={"step": ("step", curves["step"], {"units": "1", "long_name": "optimizer step"})},
    )


def samples_dataset(system, x, log_q, u) -> xr.Dataset:
    """Model samples with ln q, u and the log-weights; x is [n, cv] for toys, [n, atom, spatial] for molecules."""
    log_w, n_nonfinite = estimators.log_weights(u, log_q)
    if isinstance(system, Toy2DSystem):
        positions = _var(("sample", "cv"), x, "nm", "model sample")
        coords = {"cv": list(system.cvs)}
        density = "model log-density ln q(x) (x in nm)"
    else:
        positions = _var(("sample", "atom", "spatial"), x, "nm", "model sample, Cartesian, canonical frame")
        coords = {"spatial": ["x", "y", "z"]}
        density = "model log-density ln q over internal coordinates minus their log-Jacobian (NaN: outside the map)"
    return xr.Dataset(
        {
            "positions": positions,
            "log_q": _var("sample", log_q, "1", density),
            "reduced_energy": _var("sample", u, "1", "reduced energy u = E / kT at the target temperature"),
            "log_w": _var("sample", log_w, "1", "log importance weight -u - ln q (-inf: non-finite, dropped)"),
        },
        coords=coords,
        attrs={"n_nonfinite": n_nonfinite, "temperature_k": system.target_temperature_k},
    )


def weighted_samples_dataset(system, positions, log_w, u, log_w_long_name: str) -> xr.Dataset:
    """Samples whose weights do not come from a log q (SMC, MCMC), in the samples contract (log_q NaN)."""
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    dataset = samples_dataset(system, positions, np.full(len(log_w), np.nan), u)
    dataset["log_w"] = _var("sample", log_w, "1", log_w_long_name)
    dataset["log_q"].attrs["long_name"] = "not defined for this sampler (NaN)"
    dataset.attrs["n_nonfinite"] = int(np.sum(~np.isfinite(log_w)))
    return dataset


def mcmc_stage(system, samples: xr.Dataset, settings: dict, log=print) -> xr.Dataset:
    """Independence MH over a model's weighted draws → the chain states, equally weighted."""
    from boltzflow.samplers import independence_metropolis

    index, rate = independence_metropolis(samples["log_w"].values, settings["chains"], settings["burn_in"],
                                          settings["seed"])
    log(f"independence MH: {settings['chains']} chains, acceptance {rate:.4f}, {len(index)} states kept "
        f"after {settings['burn_in']} burn-in steps per chain")
    # A chain that never left a non-finite first draw keeps no weight (its positions may be NaN).
    finite = np.isfinite(samples["log_w"].values[index])
    dataset = weighted_samples_dataset(system, samples["positions"].values[index], np.where(finite, 0.0, -np.inf),
                                       samples["reduced_energy"].values[index],
                                       "log weight of a chain state (0: the chain's states are equally weighted)")
    dataset["chain"] = _var("sample", np.tile(np.arange(settings["chains"]), len(index) // settings["chains"]), "1",
                            "chain of the state (standard errors resample whole chains)")
    dataset.attrs.update({"acceptance_rate": rate, "equally_weighted": 1})
    return dataset


# ---------------------------------------------------------------- reweighting


def reweight_stage(system, samples: xr.Dataset, observables: xr.Dataset, estimator: str, replicates: int,
                   seed: int, trim_fraction: float = 0.002, log=print, include_raw: bool = True) -> xr.Dataset:
    """Importance-reweighted estimates from model samples, plus the unweighted model as ``{estimator}_raw``
    when ``include_raw``.

    ΔF, profiles and ln Z carry bootstrap standard errors over ``replicates`` resamples. ESS/N is
    reported raw and with the top ``trim_fraction`` of log-weights clipped (``ess_fraction_trimmed``);
    the KL and JS divergences compare the 2D histogram over the first two CVs with MBAR's.
    """
    positions = samples["positions"].values
    cvs = system.cv_values(positions)
    log_w = samples["log_w"].values
    n = len(log_w)
    n_dropped = int(samples.attrs["n_nonfinite"])
    if n_dropped:
        log(f"dropped {n_dropped} of {n} samples with non-finite energy or density (zero weight)")
    edges = {cv: edges_from(observables, cv) for cv in system.cvs}

    def statistics(lw):
        parts = [estimators.state_delta_f(lw, cvs, system.states), [estimators.log_partition_function(lw)]]
        parts += [estimators.weighted_profile(cvs[cv], lw, edges[cv]) for cv in system.cvs]
        return np.concatenate(parts)

    # The raw model is every sample with equal weight, whatever its energy.
    raw = np.zeros(n)
    weightings = [log_w, raw] if include_raw else [log_w]
    names = [estimator, f"{estimator}_raw"][:len(weightings)]
    # MCMC states are correlated along each chain: the bootstrap resamples whole chains.
    groups = samples["chain"].values if "chain" in samples else None
    results = [estimators.bootstrap(statistics, lw, replicates, seed, groups) for lw in weightings]
    ess = [estimators.ess_fraction(log_w), np.nan][:len(weightings)]
    ess_trimmed = [estimators.ess_fraction(estimators.trimmed_log_weights(log_w, trim_fraction)), np.nan]
    ess_trimmed = ess_trimmed[:len(weightings)]
    if samples.attrs.get("equally_weighted", 0):
        # MCMC states: equal weights by construction, so a Kish ESS says nothing about them.
        ess, ess_trimmed = [np.nan] * len(weightings), [np.nan] * len(weightings)
    log(f"{estimator}: ESS/N = {ess[0]:.4f} raw, {ess_trimmed[0]:.4f} with the top {trim_fraction:.2%} "
        f"of log-weights trimmed, over {n} samples")
    acceptance = [float(samples.attrs.get("acceptance_rate", np.nan))] + [np.nan] * (len(weightings) - 1)

    n_states = len(system.states)
    values = np.stack([r.estimate for r in results])
    errors = np.stack([r.standard_error for r in results])
    log_z = values[:, n_states].copy()
    log_z_err = errors[:, n_states].copy()
    log_z[1:], log_z_err[1:] = np.nan, np.nan  # an unweighted model has no ln Z estimate
    if samples.attrs.get("equally_weighted", 0):
        log_z[:], log_z_err[:] = np.nan, np.nan
    dataset = xr.Dataset(coords={**_grid_coords(system, edges), "estimator": names})
    dataset["delta_f"] = _var(("estimator", "state"), values[:, :n_states], "kT",
                              "state free energy relative to the first state")
    dataset["delta_f_err"] = _var(("estimator", "state"), errors[:, :n_states], "kT",
                                  "bootstrap standard error of delta_f")
    dataset["ess_fraction"] = _var("estimator", ess, "1", "Kish effective sample size / N (raw weights)")
    dataset["ess_fraction_trimmed"] = _var("estimator", ess_trimmed, "1",
                                           f"Kish ESS / N with the top {trim_fraction:g} of log-weights clipped")
    dataset["log_z"] = _var("estimator", log_z, "1", log_z_long_name(system))
    dataset["log_z_err"] = _var("estimator", log_z_err, "1", "bootstrap standard error of log_z")
    dataset["n_samples"] = _var("estimator", [n] * len(names), "1", "number of model samples")
    dataset["acceptance_rate"] = _var("estimator", acceptance, "1", "Metropolis-Hastings acceptance rate (SMC moves, MCMC)")
    start = n_states + 1
    for cv in system.cvs:
        stop = start + len(edges[cv]) - 1
        dataset[f"F_{cv}"] = _var(("estimator", cv), values[:, start:stop], "kT", f"free-energy profile along {cv}")
        dataset[f"dF_{cv}"] = _var(("estimator", cv), errors[:, start:stop], "kT", f"bootstrap standard error of F_{cv}")
        start = stop
    first, second = system.cvs[:2]
    surfaces = [estimators.weighted_surface(cvs[first], cvs[second], lw, edges[first], edges[second])
                for lw in weightings]
    dataset[surface_name(system)] = _var(("estimator", first, second), surfaces, "kT",
                                         f"free-energy surface -ln p({first}, {second})")
    area = np.outer(np.diff(edges[first]), np.diff(edges[second]))
    reference = np.exp(-observables[surface_name(system)].values) * area
    divergences = [estimators.histogram_divergences(reference, np.exp(-surface) * area) for surface in surfaces]
    dataset["kl_divergence"] = _var("estimator", [d[0] for d in divergences], "1",
                                    f"KL(MBAR || estimate) of the ({first}, {second}) histogram, nats")
    dataset["js_divergence"] = _var("estimator", [d[1] for d in divergences], "1",
                                    f"Jensen-Shannon divergence from MBAR of the ({first}, {second}) histogram, nats")
    dataset.attrs["n_nonfinite"] = n_dropped
    return dataset


def log_z_long_name(system) -> str:
    if isinstance(system, Toy2DSystem):
        return "ln Z = ln ∫ exp(-u) dx dy, x and y in nm"
    return "ln Z over internal coordinates (bonds nm, angles rad), rigid-body motion excluded"


# ---------------------------------------------------------------- summary


def benchmark_cpu_seconds(paths) -> float:
    """Sum of CPU seconds over Snakemake benchmark files (falls back to wall seconds if CPU is missing)."""
    import pandas as pd

    total = 0.0
    for path in paths:
        row = pd.read_csv(path, sep="\t").iloc[-1]
        cpu = float(row.get("cpu_time", np.nan))
        total += cpu if np.isfinite(cpu) and cpu > 0 else float(row["s"])
    return total


SUMMARY_VARIABLES = ["delta_f", "delta_f_err", "ess_fraction", "ess_fraction_trimmed", "log_z", "log_z_err",
                     "kl_divergence", "js_divergence", "n_samples", "acceptance_rate", "cpu_seconds"]


def summary_stage(system, observables: xr.Dataset, estimates: list[xr.Dataset], cpu_seconds: dict[str, float]):
    """Combine the MBAR reference and every model estimator → (summary, profiles, surface)."""
    reference = observables.expand_dims(estimator=["mbar"])
    nan = [np.nan]
    rows = [reference.assign(
        ess_fraction=_var("estimator", nan, "1", "Kish effective sample size / N (raw weights)"),
        ess_fraction_trimmed=_var("estimator", nan, "1", "Kish ESS / N with the top log-weights clipped"),
        log_z=_var("estimator", nan, "1", log_z_long_name(system)),
        log_z_err=_var("estimator", nan, "1", "standard error of log_z"),
        kl_divergence=_var("estimator", [0.0], "1", "KL(MBAR || estimate) of the 2D CV histogram, nats"),
        js_divergence=_var("estimator", [0.0], "1", "Jensen-Shannon divergence from MBAR, nats"),
        n_samples=_var("estimator", [observables.attrs["n_samples"]], "1", "number of samples used"),
        acceptance_rate=_var("estimator", nan, "1", "Metropolis-Hastings acceptance rate (SMC moves, MCMC)"),
    )]
    rows += estimates
    combined = xr.concat(rows, dim="estimator", data_vars="all", coords="minimal", compat="override",
                         combine_attrs="override")
    combined.attrs = {}  # the inputs' global attributes describe them, not the summary
    names = [str(e) for e in combined["estimator"].values]
    combined["cpu_seconds"] = _var("estimator", [cpu_seconds.get(e, np.nan) for e in names], "s",
                                   "CPU seconds of the rules that produced the estimate (benchmark files)")
    summary = combined[SUMMARY_VARIABLES].drop_vars(
        [c for c in combined.coords if c not in ("estimator", "state")], errors="ignore")
    summary["delta_f"].attrs["long_name"] = (
        f"state free energy relative to {system.states[0].name} at {system.target_temperature_k:g} K")
    profile_vars = [f"{prefix}_{cv}" for cv in system.cvs for prefix in ("F", "dF")]
    keep = {"estimator", *system.cvs, *(f"{cv}_edges" for cv in system.cvs)}
    profiles = combined[profile_vars].drop_vars([c for c in combined.coords if c not in keep], errors="ignore")
    keep_surface = {"estimator", *system.cvs[:2], *(f"{cv}_edges" for cv in system.cvs[:2])}
    surface = combined[[surface_name(system)]].drop_vars(
        [c for c in combined.coords if c not in keep_surface], errors="ignore")
    return summary, profiles, surface


def summary_table(summary: xr.Dataset):
    """The summary as a long table: one row per (estimator, state)."""
    table = summary.to_dataframe().reset_index()
    return table[["estimator", "state", *SUMMARY_VARIABLES]]
