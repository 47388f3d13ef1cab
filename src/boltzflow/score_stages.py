"""Workflow stages of the score models and of the samplers that work on any model (SMC, flow MCMC).

Same pattern as ``stages``: arrays and settings in, labelled xarray Datasets out; the sample files follow
the flow's contract (positions, log_q, reduced_energy, log_w), so reweighting, the summary and the
figures treat every estimator alike.

Representation. Toy systems: x and y. Molecules: the internal coordinates of the Boltzmann generator,
with *every* torsion unwrapped into a window so that the diffusion runs on real numbers: narrow torsions
around their circular mean, the others with the window's edge at the least-populated angle of the MD
data, so the cut falls where there are (almost) no samples. All coordinates are standardized by the MD
mean and standard deviation before the diffusion.
"""

from __future__ import annotations

import math
import time

import numpy as np
import xarray as xr

from boltzflow.devices import select_device
from boltzflow.stages import _var, samples_dataset, weighted_samples_dataset
from boltzflow.systems import Toy2DSystem
from boltzflow.units import kt_kj_mol

SCORE_ARCHITECTURE = ("hidden", "n_hidden_layers", "time_frequencies", "beta_min", "beta_max", "t_min")

#: Histogram bins for finding the least-populated angle of a wide torsion (10° each).
TORSION_CUT_BINS = 36


def torsion_window_centres(ic, is_torsion, narrow_resultant: float):
    """Window centre per coordinate (NaN for bonds and angles): every torsion gets a window.

    Narrow torsions (mean resultant length above ``narrow_resultant``) are centred on their circular
    mean; wide ones on the angle opposite their least-populated 10° bin.
    """
    import torch

    from boltzflow.molecule_stages import circular_statistics

    mean_angle, resultant = circular_statistics(ic)
    centres = torch.full((ic.shape[1],), math.nan, dtype=torch.float64)
    edges = np.linspace(-math.pi, math.pi, TORSION_CUT_BINS + 1)
    for column in np.flatnonzero(is_torsion.numpy()):
        if resultant[column] > narrow_resultant:
            centres[column] = float(mean_angle[column])
            continue
        counts, _ = np.histogram(ic[:, column].numpy(), bins=edges)
        emptiest = int(np.argmin(counts))
        cut = 0.5 * (edges[emptiest] + edges[emptiest + 1])
        centres[column] = math.remainder(cut + math.pi, 2 * math.pi)
    return centres


def fit_score(system, target_md: xr.Dataset, settings: dict, log=print):
    """Train a score model by denoising score matching on target-temperature MD → (ScoreGenerator, curves)."""
    import torch

    from boltzflow.generators import SCORE_NETWORKS, InternalCoordinateMap, ScoreGenerator
    from boltzflow import scores

    device = select_device(settings["device"], log=log)
    torch.manual_seed(settings["seed"])
    positions = torch.as_tensor(target_md["positions"].values, dtype=torch.float64)
    coordinate_map = None
    if isinstance(system, Toy2DSystem):
        y = positions
    else:
        from boltzflow.molecule_stages import NARROW_TORSION_RESULTANT, molecule_internal_coordinates

        _, zmatrix, coordinates, ic = molecule_internal_coordinates(system, positions)
        centres = torsion_window_centres(ic, coordinates.is_torsion, NARROW_TORSION_RESULTANT)
        coordinate_map = InternalCoordinateMap(zmatrix, centres)
        y = coordinate_map.flow_coordinates(ic)
    loc, scale = y.mean(0), y.std(0).clamp_min(1e-8)
    network_class = getattr(scores, SCORE_NETWORKS[settings["parameterization"]])
    network = network_class(dim=y.shape[1], **{key: settings[key] for key in SCORE_ARCHITECTURE})
    model = ScoreGenerator(network, loc, scale, coordinate_map)
    data = model.standardize(y).to(torch.get_default_dtype())
    log(f"training a {settings['parameterization']} score model on {len(data)} MD samples at "
        f"{system.target_temperature_k:g} K: {y.shape[1]} standardized coordinates, "
        f"{sum(p.numel() for p in network.parameters())} parameters")
    curves = scores.train_score_model(
        network.to(device), data.to(device), network.schedule, steps=settings["steps"],
        batch_size=settings["batch_size"], learning_rate=settings["learning_rate"], seed=settings["seed"], log=log)
    model.network = network.cpu()
    return model, curves


def score_curves_dataset(curves: dict) -> xr.Dataset:
    return xr.Dataset(
        {
            "dsm_loss": _var("step", curves["loss"], "1",
                             "denoising score-matching loss per sample, weight σ(t)², standardized coordinates"),
            "learning_rate": _var("step", curves["learning_rate"], "1", "learning rate"),
        },
        coords={"step": ("step", curves["step"], {"units": "1", "long_name": "optimizer step"})},
    )


def save_score(model, path) -> None:
    import torch

    from boltzflow.io import atomic_path

    with atomic_path(path) as temporary:
        torch.save({"kind": "score", "config": model.config, "state_dict": model.state_dict()}, temporary)


def load_score(path):
    import torch

    from boltzflow.generators import ScoreGenerator

    saved = torch.load(path, weights_only=True, map_location="cpu")
    if saved.get("kind") != "score":
        raise ValueError(f"{path}: not a score model file")
    model = ScoreGenerator.from_config(saved["config"])
    model.load_state_dict(saved["state_dict"])
    return model.eval()


class TargetEnergy:
    """u(x) at the target temperature as a torch function of positions, for any system (context manager)."""

    def __init__(self, system, workers: int = 1):
        self.system, self.evaluator = system, None
        if not isinstance(system, Toy2DSystem):
            from boltzflow.molecule_stages import load_system_molecule
            from boltzflow.molecules import EnergyEvaluator, reduced_energy_function

            self.evaluator = EnergyEvaluator(load_system_molecule(system), platform="Reference", n_workers=workers)
            self._energy = reduced_energy_function(self.evaluator, kt_kj_mol(system.target_temperature_k))

    def __call__(self, x):
        if self.evaluator is None:
            return self.system.reduced_energy(x.double())
        return self._energy(x.double())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.evaluator is not None:
            self.evaluator.close()


def sample_score_stage(system, model, settings: dict, likelihood: str, log=print, energy_workers: int = 1):
    """Probability-flow samples of a score model with log q by one estimator → samples dataset."""
    import torch

    from boltzflow.samplers import sample_flow

    device = select_device(settings["device"], log=log)
    model = model.double().to(device)
    n_samples, batch = settings["n_samples"], settings["batch_size"]
    n_probes = {"exact": 1, "hutchinson": settings.get("hutchinson_probes"),
                "perturbation": settings.get("perturbation_probes"),
                "perturbation_multistep": settings.get("perturbation_probes")}[likelihood]
    draws = ScoreLatent(model, likelihood, settings["ode_steps"], n_probes,
                        probe_generator=torch.Generator().manual_seed(settings["seed"] + 1))
    log(f"sampling {n_samples} from the score model: {settings['ode_steps']} RK4 steps, log q by {likelihood}"
        + (f" ({n_probes} probe(s))" if likelihood != "exact" else ""))
    started = time.perf_counter()
    with TargetEnergy(system, energy_workers) as energy:
        x, log_q, u = sample_flow(draws, energy, n_samples, settings["seed"], batch, log=log)
    dataset = samples_dataset(system, x, log_q, u)
    dataset.attrs.update({"likelihood": likelihood, "ode_steps": settings["ode_steps"], "probes": n_probes,
                          "sampling_wall_seconds": time.perf_counter() - started})
    return dataset


def smc_stage(system, latent_model, settings: dict, log=print, energy_workers: int = 1) -> xr.Dataset:
    """Sequential Monte Carlo from a model (``generators.FlowLatent`` or a decode closure) → samples dataset."""
    from boltzflow.smc import SMCSettings, run_smc

    if getattr(latent_model, "likelihood", None) == "hutchinson":
        raise ValueError("SMC needs unbiased weights: use exact, perturbation or perturbation_multistep")

    smc_settings = SMCSettings(**{key: settings[key] for key in (
        "n_particles", "ess_target", "resample_threshold", "moves_per_level", "max_levels", "seed")})
    with TargetEnergy(system, energy_workers) as energy:
        result = run_smc(latent_model.decode, energy, latent_model.latent_dim, smc_settings, log=log)
    dataset = weighted_samples_dataset(system, result.positions, result.log_w, result.reduced_energy,
                                       "SMC log weight (log-mean-exp = SMC estimate of ln Z)")
    dataset["beta"] = _var("level", result.betas[1:], "1", "annealing exponent β of each SMC level")
    dataset["acceptance"] = _var("level", result.acceptance, "1", "MH acceptance rate of the moves at the level")
    dataset["level_ess_fraction"] = _var("level", result.ess_before_resampling, "1",
                                         "ESS/N after reweighting to the level, before resampling")
    dataset.attrs.update({"acceptance_rate": float(np.mean(result.acceptance)), "smc_log_z": result.log_z,
                          "resamplings": result.resamplings})
    return dataset


class ScoreLatent:
    """A score model with one likelihood estimator as a map from latent noise (see ``smc``), and as a sampler
    with ``sample(n, generator)`` like a flow's (``samplers.sample_flow``).

    ``probe_generator`` draws the Hutchinson probes, which are not part of the latent.
    """

    def __init__(self, model, likelihood: str, n_steps: int, n_probes: int, probe_generator=None):
        self.model, self.likelihood, self.n_steps, self.n_probes = model, likelihood, n_steps, n_probes
        self.probe_generator = probe_generator
        self.latent_dim = model.latent_dim(likelihood, n_steps, n_probes)

    def decode(self, latent):
        return self.model.decode(latent, self.likelihood, self.n_steps, self.n_probes, self.probe_generator)

    def sample(self, n: int, generator=None):
        import torch

        return self.decode(torch.randn(n, self.latent_dim, generator=generator, dtype=torch.float64))
