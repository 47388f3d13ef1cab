"""Score-model stages: denoising score matching on target-temperature MD, probability-flow ODE samples.

Representation (``Target.model_coordinates`` with every torsion unwrapped): toys in x and y; molecules in
the internal coordinates of the Boltzmann generator with *every* torsion unwrapped into a window, so that
the diffusion runs on real numbers (narrow torsions around their circular mean, the others with the
window's edge at the least-populated angle of the MD data). All coordinates are standardized by the MD
mean and standard deviation before the diffusion.
"""

from __future__ import annotations

import time

import xarray as xr

from boltzflow.devices import select_device
from boltzflow.settings import ScoreSamplingSettings, ScoreSettings
from boltzflow.stages.datasets import samples_dataset, variable


def fit_score(system, target_md: xr.Dataset, settings: ScoreSettings, log=print, checkpoint_path=None):
    """Train a score model by denoising score matching on target-temperature MD → (ScoreGenerator, curves)."""
    import torch

    from boltzflow import scores
    from boltzflow.generators import SCORE_NETWORKS, ScoreGenerator

    device = select_device(settings.device, log=log)
    torch.manual_seed(settings.seed)
    coordinates = system.model_coordinates(target_md["positions"].values, wrap_all_torsions=True)
    y = coordinates.y
    loc, scale = y.mean(0), y.std(0).clamp_min(1e-8)
    network_class = getattr(scores, SCORE_NETWORKS[settings.parameterization])
    network = network_class(dim=y.shape[1], **settings.architecture)
    model = ScoreGenerator(network, loc, scale, coordinates.coordinate_map)
    data = model.standardize(y).to(torch.get_default_dtype())
    log(f"training a {settings.parameterization} score model on {len(data)} MD samples at "
        f"{system.target_temperature_k:g} K: {y.shape[1]} standardized coordinates, "
        f"{sum(p.numel() for p in network.parameters())} parameters")
    curves = scores.train_score_model(
        network.to(device), data.to(device), network.schedule, steps=settings.steps,
        batch_size=settings.batch_size, learning_rate=settings.learning_rate, seed=settings.seed, log=log,
        checkpoint_path=checkpoint_path)
    model.network = network.cpu()
    return model, curves


def score_curves_dataset(curves: dict) -> xr.Dataset:
    return xr.Dataset(
        {
            "dsm_loss": variable("step", curves["loss"], "1",
                                 "denoising score-matching loss per sample, weight σ(t)², standardized coordinates"),
            "learning_rate": variable("step", curves["learning_rate"], "1", "learning rate"),
        },
        coords={"step": ("step", curves["step"], {"units": "1", "long_name": "optimizer step"})},
    )


def save_score(model, path) -> None:
    import torch

    from boltzflow.io import atomic_path

    with atomic_path(path) as temporary:
        torch.save({"config": model.config, "state_dict": model.state_dict()}, temporary)


def load_score(path):
    """The :class:`~boltzflow.generators.ScoreGenerator` saved by :func:`save_score`, in eval mode."""
    import torch

    from boltzflow.generators import ScoreGenerator

    saved = torch.load(path, weights_only=True, map_location="cpu")
    if "network" not in saved.get("config", {}):
        raise ValueError(f"{path}: not a score model file")
    model = ScoreGenerator.from_config(saved["config"])
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def sample_score_stage(system, model, settings: ScoreSamplingSettings, likelihood: str, log=print,
                       energy_workers: int = 1):
    """Probability-flow samples of a score model with log q by one estimator → samples dataset."""
    import torch

    from boltzflow.samplers import sample_flow

    device = select_device(settings.device, log=log)
    model = model.double().to(device)
    n_probes = settings.probes(likelihood)
    draws = ScoreLatent(model, likelihood, settings.ode_steps, n_probes,
                        probe_generator=torch.Generator().manual_seed(settings.seed + 1))
    log(f"sampling {settings.n_samples} from the score model: {settings.ode_steps} RK4 steps, log q by "
        f"{likelihood}" + (f" ({n_probes} probe(s))" if likelihood != "exact" else ""))
    started = time.perf_counter()
    with system.energy(energy_workers) as energy:
        x, log_q, u = sample_flow(draws, energy, settings.n_samples, settings.seed, settings.batch_size, log=log)
        wall_seconds = time.perf_counter() - started
        check = draws.check_integrator(system, energy, settings.integrator_check_samples, INTEGRATOR_CHECK_SEED,
                                       settings.batch_size, log=log)
    dataset = samples_dataset(system, x, log_q, u)
    dataset.attrs.update({"likelihood": likelihood, "ode_steps": settings.ode_steps, "probes": n_probes,
                          "sampling_wall_seconds": wall_seconds})
    return with_integrator_check(dataset, system, check)


#: Seed of the integrator check's latents (fixed: the check compares step counts, not sampler seeds).
INTEGRATOR_CHECK_SEED = 20260


def with_integrator_check(dataset: xr.Dataset, system, check) -> xr.Dataset:
    """The samples dataset with what ``integrator_check.check_integrator`` measured (NaN when disabled):
    ``integrator_error`` [state] (kT) and its bootstrap error, attributes ``integrator_error_log_z`` (nats),
    ``integrator_check_samples`` and ``integrator_mean_log_w_shift`` (nats per sample)."""
    steps = f"{check.n_steps} RK4 steps"
    dataset = dataset.assign_coords(state=("state", [state.name for state in system.states],
                                           {"units": "1", "long_name": "state (ΔF relative to the first)"}))
    dataset["integrator_error"] = variable(
        "state", check.delta_f_error, "kT",
        f"estimated error of ΔF from integrating the probability-flow ODE with {steps} (16/15 x the shift of "
        f"ΔF from n to 2n steps on the same latents, exact divergence; > 0: ΔF too high; NaN: not measured)")
    dataset["integrator_error_err"] = variable("state", check.delta_f_error_err, "kT",
                                               "bootstrap standard error of integrator_error over the checked latents")
    dataset.attrs.update({"integrator_error_log_z": check.log_z_error,
                          "integrator_error_log_z_err": check.log_z_error_err,
                          "integrator_mean_log_w_shift": check.mean_log_w_shift,
                          "integrator_check_samples": check.n_samples})
    return dataset


class ScoreLatent:
    """A score model with one likelihood estimator as a map from latent noise (see ``smc``), and as a sampler
    with ``sample(n, generator)`` like a flow's (``samplers.sample_flow``).

    ``probe_generator`` draws the Hutchinson probes, which are not part of the latent.
    ``integrator_check_samples`` is how many latents ``check_integrator`` uses by default.
    """

    def __init__(self, model, likelihood: str, n_steps: int, n_probes: int, probe_generator=None,
                 integrator_check_samples: int = 0):
        self.model, self.likelihood, self.n_steps, self.n_probes = model, likelihood, n_steps, n_probes
        self.probe_generator = probe_generator
        self.latent_dim = model.latent_dim(likelihood, n_steps, n_probes)
        self.integrator_check_samples = integrator_check_samples

    def check_integrator(self, system, energy, n_samples: int | None = None, seed: int = INTEGRATOR_CHECK_SEED,
                         batch_size: int = 2000, log=print):
        """Step doubling of this model's ODE (``n_steps`` against 2 × ``n_steps``, exact divergence) on
        ``n_samples`` latents (default ``integrator_check_samples``; 0 disables it): an ``IntegratorCheck``.
        Whatever the likelihood, the check uses the exact divergence, which isolates the discretization."""
        from boltzflow.integrator_check import check_integrator

        n_samples = self.integrator_check_samples if n_samples is None else n_samples
        return check_integrator(system, lambda latent, steps: self.model.decode(latent, "exact", steps), energy,
                                self.model.dim, self.n_steps, n_samples, seed, batch_size, log=log)

    def decode(self, latent):
        return self.model.decode(latent, self.likelihood, self.n_steps, self.n_probes, self.probe_generator)

    def sample(self, n: int, generator=None):
        import torch

        return self.decode(torch.randn(n, self.latent_dim, generator=generator, dtype=torch.float64))
