"""Flow stages: train a spline coupling flow on target-temperature MD, save and load it, draw samples.

The flow models the system's model coordinates (``Target.model_coordinates``): x and y for a toy; for a
molecule the internal coordinates, with narrow torsions unwrapped around their circular mean and wide
ones on the circle (a Boltzmann generator). The saved file holds the whole :class:`FlowGenerator`.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from boltzflow.devices import select_device
from boltzflow.settings import FlowSettings, SamplingSettings
from boltzflow.stages.datasets import samples_dataset, variable

#: Flow samples drawn at every training record to follow ESS/N over training (fixed noise).
ESS_MONITOR_SAMPLES = 2000


def validation_split(md: xr.Dataset, validation_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) sample indices of an MD dataset; validation is the last stretch in time.

    Samples are ordered by their ``time`` (stable, so the walkers of one frame keep their order), and the
    last :func:`boltzflow.training.validation_count` are held out: for every walker (toys) or every
    replica passing through the state (molecules) its validation frames come after all its training
    frames, a contiguous block of its trajectory, not autocorrelated neighbours of training frames.
    A dataset without ``time`` is taken to be stored in time order, as both MD routes store samples.
    MD from trajectory files (a ``trajectory`` label per sample: each file its own run, of its own length
    and times) is ordered by the fraction of its file that each frame completes, so that every file gives
    the last ``validation_fraction`` of its frames.
    """
    from boltzflow.training import validation_count

    if "trajectory" in md:
        trajectory, frame = md["trajectory"].values, md["frame"].values
        length = np.bincount(trajectory)[trajectory]
        order = np.lexsort((trajectory, (frame + 1) / length))
    else:
        order = np.argsort(md["time"].values, kind="stable") if "time" in md else np.arange(md.sizes["sample"])
    n_train = len(order) - validation_count(len(order), validation_fraction)
    return order[:n_train], order[n_train:]


def fit_flow(system, target_md: xr.Dataset, settings: FlowSettings, log=print, checkpoint_path=None,
             energy_workers: int = 1):
    """Train a flow on every target-temperature MD sample → (FlowGenerator, training curves).

    The last ``validation_fraction`` of the run in time is held out for the validation NLL
    (:func:`validation_split`).

    Maximum likelihood on the model coordinates, standardized by the data mean and standard deviation
    (circular coordinates: by their circular mean), plus ``energy_weight`` × the reverse KL to the
    model-coordinate target u(x(y)) - J(y) when ``energy_weight > 0``. The target energy also feeds the
    ESS monitor at every record. With ``checkpoint_path`` an interrupted training resumes where it stopped.
    """
    import torch

    from boltzflow.flows import MixedSplineCouplingFlow, SplineCouplingFlow
    from boltzflow.generators import FlowGenerator
    from boltzflow.training import train_flow

    device = select_device(settings.device, log=log)
    torch.manual_seed(settings.seed)
    # Training rows first, then the validation block that train_flow holds out (the last rows).
    train_index, validation_index = validation_split(target_md, settings.validation_fraction)
    positions = target_md["positions"].values[np.concatenate([train_index, validation_index])]
    coordinates = system.model_coordinates(positions, wrap_all_torsions=False)
    data = coordinates.y.to(torch.get_default_dtype())
    circular = coordinates.circular
    loc = torch.where(circular, torch.zeros_like(data[0]), data.mean(0))
    scale = torch.where(circular, torch.ones_like(data[0]), data.std(0).clamp_min(1e-6))
    if circular.any():
        flow = MixedSplineCouplingFlow(dim=data.shape[1], circular=circular.tolist(), loc=loc, scale=scale,
                                       circular_loc=coordinates.circular_mean.to(data.dtype), **settings.architecture)
    else:
        flow = SplineCouplingFlow(dim=data.shape[1], loc=loc, scale=scale, **settings.architecture)
    generator = FlowGenerator(coordinates.coordinate_map, flow)
    log(f"training a flow on {len(data)} MD samples at {system.target_temperature_k:g} K: {data.shape[1]} model "
        f"coordinates ({int(circular.sum())} circular), {sum(p.numel() for p in flow.parameters())} parameters")

    with system.energy(energy_workers) as reduced_energy:
        curves = train_flow(
            flow.to(device), data.to(device),
            reduced_energy=coordinates.coordinate_map.reduced_energy_internal(reduced_energy),
            ess_samples=ESS_MONITOR_SAMPLES, steps=settings.steps, batch_size=settings.batch_size,
            learning_rate=settings.learning_rate, energy_weight=settings.energy_weight,
            validation_fraction=settings.validation_fraction, seed=settings.seed, log=log,
            checkpoint_path=checkpoint_path)
    generator.flow = flow.cpu()
    return generator, curves


def save_flow(generator, path) -> None:
    """Architecture and weights in one file, readable with ``torch.load(weights_only=True)``."""
    import torch

    from boltzflow.io import atomic_path

    with atomic_path(path) as temporary:
        torch.save({"config": generator.config, "state_dict": generator.state_dict()}, temporary)


def load_flow(path):
    """The :class:`~boltzflow.generators.FlowGenerator` saved by :func:`save_flow`, in eval mode.

    ``load_flow(path).sample(n)`` gives n positions (nm, float64) and their log q.
    """
    import torch

    from boltzflow.generators import FlowGenerator

    saved = torch.load(path, weights_only=True, map_location="cpu")
    model = FlowGenerator.from_config(saved["config"])
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def sample_flow_stage(system, generator, settings: SamplingSettings, log=print, energy_workers: int = 1):
    """Draw flow samples with log q and their reduced energies at the target temperature → samples dataset."""
    from boltzflow.samplers import sample_flow

    generator = generator.to(select_device(settings.device, log=log))
    with system.energy(energy_workers) as reduced_energy:
        x, log_q, u = sample_flow(generator, reduced_energy, settings.n_samples, settings.seed, settings.batch_size,
                                  log=log)
    return samples_dataset(system, x, log_q, u)


def curves_dataset(curves: dict) -> xr.Dataset:
    """The flow's training curves (one entry per record) as a dataset over ``step``."""
    return xr.Dataset(
        {
            "train_nll": variable("step", curves["train_nll"], "1", "training negative log-likelihood per sample"),
            "validation_nll": variable("step", curves["validation_nll"], "1",
                                       "validation negative log-likelihood per sample"),
            "reverse_kl": variable("step", curves["reverse_kl"], "1",
                                   "reverse KL term E_q[u + ln q] (up to ln Z; NaN if unused)"),
            "ess_fraction": variable("step", curves["ess_fraction"], "1",
                                     "Kish ESS / N of monitor samples from the flow at that step"),
            "learning_rate": variable("step", curves["learning_rate"], "1", "learning rate"),
        },
        coords={"step": ("step", curves["step"], {"units": "1", "long_name": "optimizer step"})},
    )
