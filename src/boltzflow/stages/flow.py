"""Flow stages: train a spline coupling flow on target-temperature MD, save and load it, draw samples.

The flow models the system's model coordinates (``Target.model_coordinates``): x and y for a toy; for a
molecule the internal coordinates, with narrow torsions unwrapped around their circular mean and wide
ones on the circle (a Boltzmann generator). The saved file holds the whole :class:`FlowGenerator`.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from boltzflow import estimators
from boltzflow.devices import select_device
from boltzflow.settings import FlowSettings, SamplingSettings
from boltzflow.stages.datasets import samples_dataset, variable

#: Flow samples drawn at every training record to follow ESS/N over training (fixed noise).
ESS_MONITOR_SAMPLES = 2000

#: Below this ESS/N of its replay buffer an annealing refit learns a handful of samples (alanine dipeptide,
#: 1200 → 1029 K from a flow at ESS/N 0.12: 0.002, and the flow collapsed); the log warns.
ANNEAL_MIN_BUFFER_ESS = 0.01

#: The training phases' names by their ``phase`` number in the curves.
PHASE_NAMES = {0: "maximum likelihood", 1: "energy-based refinement", 2: "temperature annealing"}


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
             energy_workers: int = 1, ladder_md: list[xr.Dataset] | None = None,
             annealing_md: list[xr.Dataset] | None = None):
    """Train a flow on every target-temperature MD sample → (FlowGenerator, training curves).

    The last ``validation_fraction`` of the run in time is held out for the validation NLL
    (:func:`validation_split`).

    With ``ladder_md`` (the MD of the other ladder temperatures), the flow is temperature-conditioned
    (:class:`boltzflow.flows.FlowAtTemperature`, temperature-conditioned after Dibak et al.): one model
    of q(x | T) fitted to the frames of every temperature at once, each temperature's last stretch held out;
    the coordinate map and the standardization come from the target's frames, and the energy terms and
    the ESS monitor act at the target. :func:`flow_at_temperature` gives its generator at any temperature.

    Maximum likelihood on the model coordinates, standardized by the data mean and standard deviation
    (circular coordinates: by their circular mean), plus ``energy_weight`` × the reverse KL to the
    model-coordinate target u(x(y)) - J(y) when ``energy_weight > 0``, stopped early when the validation
    NLL has not improved for ``early_stopping_patience`` records (keeping the best weights). Then, with
    ``refine_steps > 0``, an energy-based refinement: ``refine_steps`` more steps of the same loss with
    ``refine_energy_weight`` (reverse KL with the target's energies and forces; the NLL term keeps every
    basin of the data) plus ``refine_buffer_weight`` × the NLL of the flow's own importance-weighted
    samples (a replay buffer, :class:`boltzflow.training.BufferSettings`), its own learning rate and
    cosine schedule; its records continue the step count.
    The target energy also feeds the ESS monitor at every record. With ``checkpoint_path`` an interrupted
    training resumes where it stopped.

    With ``settings.anneal_steps`` > 0, temperature annealing (after TA-BG, Schopmans & Friederich 2025):
    ``annealing_md`` is the MD of the other ladder temperatures, in the ladder's order. The maximum-likelihood
    phase learns the hottest temperature's MD, where every basin is visited (the coordinate map and the
    standardization come from those frames; its energy term and ESS monitor act at that temperature). Then,
    for each lower ladder temperature T down to the target, ``anneal_steps`` steps (learning rate
    ``anneal_learning_rate``, a cosine schedule of their own) fit the flow to its own samples weighted to T by
    w = exp(-u_T) / q, u_T = E / kT, through a replay buffer that starts empty at each T
    (``anneal_buffer_samples`` samples every ``refine_buffer_refresh_every`` steps, the newest
    ``refine_buffer_size`` kept): no MD frame below the hottest enters the loss. The MD of T only measures the
    fit (``validation_nll``). An optional refinement (``refine_steps``) follows at the target, on the
    target's MD. The curves record each record's ``temperature`` (of its energies and ESS monitor).
    """
    import torch

    from boltzflow.flows import FlowAtTemperature, MixedSplineCouplingFlow, SplineCouplingFlow
    from boltzflow.generators import FlowGenerator
    from boltzflow.training import BufferSettings, train_flow

    if settings.anneal_steps and ladder_md:
        raise ValueError("a temperature-conditioned flow (ladder_md) has no temperature annealing")
    if settings.anneal_steps and not annealing_md:
        raise ValueError("temperature annealing (anneal_steps > 0) needs the MD of the other ladder temperatures")
    # Hottest last, whatever order the ladder was given in (a toy's need not be sorted).
    annealing_md = sorted(annealing_md or [], key=lambda md: _temperature_ratio(system, md)) if settings.anneal_steps else []
    if annealing_md and _temperature_ratio(system, annealing_md[0]) <= 1.0:
        raise ValueError(f"temperature annealing runs down to the target, {system.target_temperature_k:g} K; "
                         f"the ladder has {float(annealing_md[0].attrs['temperature_k']):g} K, not above it")
    device = select_device(settings.device, log=log)
    torch.manual_seed(settings.seed)
    # The first phase learns the target's MD, or when annealing the hottest temperature's.
    first_md = annealing_md[-1] if annealing_md else target_md
    first_ratio = _temperature_ratio(system, first_md) if annealing_md else 1.0
    # Training rows first, then the validation block that train_flow holds out (the last rows).
    train_index, validation_index = validation_split(first_md, settings.validation_fraction)
    positions = first_md["positions"].values[np.concatenate([train_index, validation_index])]
    coordinates = system.model_coordinates(positions, wrap_all_torsions=False)
    data = coordinates.y.to(torch.get_default_dtype())
    circular = coordinates.circular
    loc = torch.where(circular, torch.zeros_like(data[0]), data.mean(0))
    scale = torch.where(circular, torch.ones_like(data[0]), data.std(0).clamp_min(1e-6))
    conditioned = dict(temperature_conditioned=True) if ladder_md else {}
    if circular.any():
        flow = MixedSplineCouplingFlow(dim=data.shape[1], circular=circular.tolist(), loc=loc, scale=scale,
                                       circular_loc=coordinates.circular_mean.to(data.dtype), **settings.architecture,
                                       **conditioned)
    else:
        flow = SplineCouplingFlow(dim=data.shape[1], loc=loc, scale=scale, **settings.architecture, **conditioned)
    generator = FlowGenerator(coordinates.coordinate_map, flow)
    trained, validation_fraction = flow, settings.validation_fraction
    if ladder_md:
        data, validation_fraction = _ladder_rows(system, coordinates.coordinate_map, data, len(validation_index),
                                                 ladder_md, settings.validation_fraction)
        trained = FlowAtTemperature(flow, 1.0)
        log(f"temperature-conditioned: frames of {1 + len(ladder_md)} temperatures, "
            f"{int(round(validation_fraction * len(data)))} held out")
    log(f"training a flow on {len(data)} MD samples at {first_ratio * system.target_temperature_k:g} K"
        + (" and above" if ladder_md else "") + f": {flow.dim} model coordinates ({int(circular.sum())} circular), "
        f"{sum(p.numel() for p in flow.parameters())} parameters")

    phases = [dict(steps=settings.steps, learning_rate=settings.learning_rate, energy_weight=settings.energy_weight,
                   energy_batch_size=settings.energy_batch_size, patience=settings.early_stopping_patience,
                   seed=settings.seed, checkpoint=checkpoint_path, buffer=None, kind=0, ratio=first_ratio,
                   data=data, validation_fraction=validation_fraction, data_weight=1.0)]
    # Temperature annealing: from the hottest temperature down, each step a refit to the flow's own samples
    # weighted to the next temperature; the MD of that temperature measures the fit, and is not learnt.
    for k, md in reversed(list(enumerate([target_md] + annealing_md[:-1] if annealing_md else []))):
        ratio = _temperature_ratio(system, md) if k else 1.0
        y, _ = _held_out_last(coordinates.coordinate_map, md, settings.validation_fraction)
        phases.append(dict(steps=settings.anneal_steps, learning_rate=settings.anneal_learning_rate,
                           energy_weight=0.0, energy_batch_size=settings.energy_batch_size, patience=0,
                           seed=settings.seed + 20 + k, kind=2, ratio=ratio,
                           checkpoint=f"{checkpoint_path}.anneal{k}" if checkpoint_path is not None else None,
                           buffer=BufferSettings(weight=1.0, samples=settings.anneal_buffer_samples,
                                                 refresh_every=settings.refine_buffer_refresh_every,
                                                 size=settings.refine_buffer_size),
                           data=y.to(data.dtype), validation_fraction=settings.validation_fraction, data_weight=0.0))
    target_data = phases[-1]["data"] if annealing_md else data
    if settings.refine_steps:
        # Energy-based refinement: its own cosine schedule and random streams; a job killed here redoes the
        # (deterministic) maximum-likelihood phase, then resumes the refinement from its own checkpoint.
        phases.append(dict(steps=settings.refine_steps, learning_rate=settings.refine_learning_rate,
                           energy_weight=settings.refine_energy_weight,
                           energy_batch_size=settings.refine_energy_batch_size, patience=0, seed=settings.seed + 10,
                           checkpoint=f"{checkpoint_path}.refine" if checkpoint_path is not None else None,
                           buffer=BufferSettings(weight=settings.refine_buffer_weight,
                                                 samples=settings.refine_buffer_samples,
                                                 refresh_every=settings.refine_buffer_refresh_every,
                                                 size=settings.refine_buffer_size),
                           kind=1, ratio=1.0, data=target_data, validation_fraction=validation_fraction,
                           data_weight=1.0))
    curves = None
    with system.energy(energy_workers) as reduced_energy:
        for number, phase in enumerate(phases):
            temperature = phase["ratio"] * system.target_temperature_k
            if len(phases) > 1:
                log(f"phase {number + 1}/{len(phases)}: {PHASE_NAMES[phase['kind']]} at {temperature:g} K, "
                    f"{phase['steps']} steps, energy_weight {phase['energy_weight']:g}"
                    + (f", buffer_weight {phase['buffer'].weight:g}" if phase["buffer"] else ""))
            phase_curves = train_flow(
                trained.to(device), phase["data"].to(device),
                reduced_energy=energy_at_temperature(coordinates.coordinate_map, reduced_energy, phase["ratio"]),
                ess_samples=ESS_MONITOR_SAMPLES, steps=phase["steps"], batch_size=settings.batch_size,
                learning_rate=phase["learning_rate"], energy_weight=phase["energy_weight"],
                energy_batch_size=phase["energy_batch_size"], patience=phase["patience"],
                validation_fraction=phase["validation_fraction"], seed=phase["seed"], log=log,
                checkpoint_path=phase["checkpoint"], buffer=phase["buffer"], data_weight=phase["data_weight"])
            # The lowest of the phase's records: a flow collapsed onto a few samples can score well again later.
            lowest = np.nanmin(phase_curves["buffer_ess_fraction"], initial=np.inf) if phase["kind"] == 2 else np.inf
            if not lowest >= ANNEAL_MIN_BUFFER_ESS:
                log(f"WARNING: at {temperature:g} K the replay buffer's ESS/N fell to "
                    f"{lowest:.4f}: the refit learns a handful of samples and the "
                    "flow collapses onto them; anneal over a finer ladder, or from a better flow at the hottest "
                    "temperature")
            phase_curves["phase"] = np.full(len(phase_curves["step"]), phase["kind"], dtype=np.int64)
            phase_curves["temperature"] = np.full(len(phase_curves["step"]), temperature)
            curves = phase_curves if curves is None else _append_curves(curves, phase_curves)
    generator.flow = flow.cpu()
    return generator, curves


def energy_at_temperature(coordinate_map, reduced_energy, ratio: float):
    """The model-coordinate energy at T = ``ratio`` × T_target: u(x(y)) T_target / T − J(y). Only the energy
    scales with the temperature; the log-Jacobian J of the coordinate map is a volume factor, not an energy."""
    if ratio == 1.0:
        return coordinate_map.reduced_energy_internal(reduced_energy)
    return coordinate_map.reduced_energy_internal(lambda x: reduced_energy(x) / ratio)


def _held_out_last(coordinate_map, md: xr.Dataset, validation_fraction: float):
    """An MD file's model coordinates, training rows first and its held-out last stretch in time after them
    (:func:`validation_split`, the rows train_flow holds out) → (rows, number of training rows)."""
    import torch

    train_index, validation_index = validation_split(md, validation_fraction)
    positions = md["positions"].values[np.concatenate([train_index, validation_index])]
    return coordinate_map.model_coordinates(torch.as_tensor(positions)), len(train_index)


def _temperature_ratio(system, md: xr.Dataset) -> float:
    """T / T_target of an MD file of the ladder (its ``temperature_k`` attribute)."""
    return float(md.attrs["temperature_k"]) / system.target_temperature_k


def _ladder_rows(system, coordinate_map, target_data, n_target_validation: int, ladder_md: list[xr.Dataset],
                 validation_fraction: float):
    """Every temperature's frames as rows (model coordinates, then T / T_target), for a temperature-conditioned
    flow: all training rows first, then all validation blocks (train_flow holds out the last rows) → (rows,
    the fraction of them held out)."""
    import torch

    target = torch.cat([target_data, torch.ones_like(target_data[:, :1])], dim=1)
    n_target_training = len(target) - n_target_validation
    training, validation = [target[:n_target_training]], [target[n_target_training:]]
    for md in ladder_md:
        ratio = _temperature_ratio(system, md)
        y, n_train = _held_out_last(coordinate_map, md, validation_fraction)
        rows = torch.cat([y.to(target_data.dtype), torch.full_like(y[:, :1], ratio, dtype=target_data.dtype)], dim=1)
        training.append(rows[:n_train])
        validation.append(rows[n_train:])
    rows = torch.cat(training + validation)
    return rows, sum(len(block) for block in validation) / len(rows)


def flow_at_temperature(generator, temperature_ratio: float):
    """The generator of a temperature-conditioned flow at T = ``temperature_ratio`` × T_target."""
    from boltzflow.flows import FlowAtTemperature
    from boltzflow.generators import FlowGenerator

    return FlowGenerator(generator.coordinate_map, FlowAtTemperature(generator.flow, temperature_ratio))


def _append_curves(first: dict, second: dict) -> dict:
    """The records of two training phases as one run: the second's steps continue the first's."""
    offset = first["step"][-1]
    return {name: np.concatenate([first[name], second[name] + (offset if name == "step" else 0)]) for name in first}


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


def sample_ladder_stage(system, generator, settings: SamplingSettings, log=print, energy_workers: int = 1
                        ) -> xr.Dataset:
    """``settings.ladder_samples`` draws of a temperature-conditioned flow at every ladder temperature T →
    their log-weights -u_T - ln q(x | T) and reduced energies u_T = u_target T_target / T over (temperature,
    sample), without positions (``stages.ladder.ladder_estimates`` turns them into f(T))."""
    import torch

    from boltzflow.samplers import sample_flow

    device = select_device(settings.device, log=log)
    temperatures = np.asarray(system.temperatures_k, dtype=float)
    log_w, u = [], []
    with system.energy(energy_workers) as reduced_energy:
        for k, temperature in enumerate(temperatures):
            ratio = temperature / temperatures[0]
            log(f"{temperature:g} K ({k + 1}/{len(temperatures)}):")
            model = flow_at_temperature(generator, ratio).to(device)

            def energy_at(x: torch.Tensor, ratio=ratio) -> torch.Tensor:
                return reduced_energy(x) / ratio

            _, log_q, u_k = sample_flow(model, energy_at, settings.ladder_samples, settings.seed + 1 + k,
                                        settings.batch_size, log=log)
            log_w_k, n_nonfinite = estimators.log_weights(u_k, log_q)
            log(f"  ESS/N {estimators.ess_fraction(log_w_k):.4f}, {n_nonfinite} non-finite dropped")
            log_w.append(log_w_k)
            u.append(u_k)
    return xr.Dataset(
        {"log_w": variable(("temperature", "sample"), np.stack(log_w), "1",
                           "log importance weight -u_T - ln q(x | T) (-inf: non-finite, dropped)"),
         "reduced_energy": variable(("temperature", "sample"), np.stack(u), "1",
                                    "reduced energy u_T = E / kT at the sample's temperature")},
        coords={"temperature": ("temperature", temperatures, {"units": "K", "long_name": "temperature"})},
    )


def curves_dataset(curves: dict) -> xr.Dataset:
    """The flow's training curves (one entry per record) as a dataset over ``step``."""
    return xr.Dataset(
        {
            "train_nll": variable("step", curves["train_nll"], "1", "training negative log-likelihood per sample"),
            "validation_nll": variable("step", curves["validation_nll"], "1",
                                       "validation negative log-likelihood per sample"),
            "reverse_kl": variable("step", curves["reverse_kl"], "1",
                                   "reverse KL term E_q[u + ln q] (up to ln Z; NaN if unused)"),
            "buffer_nll": variable("step", curves["buffer_nll"], "1",
                                   "NLL of importance-resampled replay-buffer samples (NaN if unused)"),
            "buffer_ess_fraction": variable("step", curves["buffer_ess_fraction"], "1",
                                            "Kish ESS / N of the replay buffer's weights (NaN if unused)"),
            "ess_fraction": variable("step", curves["ess_fraction"], "1",
                                     "Kish ESS / N of monitor samples from the flow at that step"),
            "learning_rate": variable("step", curves["learning_rate"], "1", "learning rate"),
            "phase": variable("step", curves["phase"], "1",
                              "training phase: " + ", ".join(f"{k} {name}" for k, name in PHASE_NAMES.items())),
            "temperature": variable("step", curves["temperature"], "K",
                                    "temperature of the record's energies and ESS monitor"),
        },
        coords={"step": ("step", curves["step"], {"units": "1", "long_name": "optimizer step"})},
    )
