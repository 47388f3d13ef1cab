"""Training loops: one generic optimizer loop, and maximum-likelihood training of normalizing flows on
samples, optionally with a reverse-KL energy term (score models use the same loop, see ``scores``).

Units: all losses are in nats per sample (dimensionless). The NLL is -log q(x) averaged over samples,
a density in the units of x, so its absolute value depends on those units; differences and the
reverse KL E_q[u(x) + log q(x)] = KL(q || p) - log Z are what carry meaning. ``u`` is the reduced
(dimensionless) energy, u = E / kT.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from boltzflow.checkpoints import Checkpoint
from boltzflow.estimators import ess_fraction

#: Gradients are clipped to this total norm: a single bad batch (a sample from the flow in a steep
#: region of the energy) should not throw the flow far away.
MAX_GRAD_NORM = 10.0

#: Validation NLL is evaluated in chunks of this many samples, to bound memory.
_EVAL_CHUNK = 8192

#: The validation NLL of a record is taken over at most this many held-out rows, one drawn from each of as
#: many equal stretches of the held-out block (:func:`_spread_rows`; the same rows at every record, so records
#: compare like with like). As an estimate of the whole block's NLL it is off by about σ(-log q)/100: 0.06-0.17
#: nats for alanine dipeptide's ladder flow (σ 6-17 nats), the same offset at every record, so the curve's
#: changes are unaffected. Evaluating all of a ladder flow's 40,000 held-out rows cost a fifth of its training.
MAX_VALIDATION_ROWS = 10_000


# ----------------------------------------------------------------------------------------------------------
# The generic loop


class Objective(Protocol):
    """What :func:`train` minimizes.

    ``loss()`` returns the loss of one fresh minibatch (a differentiable scalar tensor) and accumulates
    whatever the records report; ``record()`` returns the values of one record (floats or ints, by
    name) and a one-line summary for the log, and resets those accumulators. ``generators`` are the
    random streams the objective draws from, by name; a checkpoint keeps their states.
    """

    generators: dict[str, torch.Generator]

    def loss(self) -> torch.Tensor: ...

    def record(self) -> tuple[dict[str, float | int], str]: ...


def train(
    model: torch.nn.Module,
    objective: Objective,
    *,
    steps: int,
    learning_rate: float,
    seed: int,
    log: Callable[[str], None],
    log_every: int,
    max_grad_norm: float,
    skip_nonfinite_steps: bool = False,
    checkpoint_path: str | Path | None = None,
    checkpoint_settings=None,
    patience: int = 0,
    monitor: str = "validation_nll",
) -> dict[str, np.ndarray]:
    """Minimize ``objective`` over the parameters of ``model`` in place; the model is left in eval mode.

    Each step: the learning rate is read, ``objective.loss()`` evaluated and back-propagated, the
    gradient norm clipped to ``max_grad_norm`` and an Adam step taken, then the cosine schedule (from
    ``learning_rate`` down to 0 over ``steps`` steps) advanced. With ``skip_nonfinite_steps``, a step
    whose gradient norm is not finite is not applied (the schedule still advances) and is counted.
    The global torch RNG is seeded with ``seed``; the model is in train mode except during records.

    Every ``log_every`` steps and at the last step, a record is taken: ``step`` (optimizer steps done),
    the values of ``objective.record()``, ``learning_rate`` (the one used for the recorded step) and,
    with ``skip_nonfinite_steps``, ``skipped_steps`` (since the previous record); a line is logged with
    ``log``. Returns numpy arrays, one entry per record, by name (int64 for int values, else float64).

    With ``checkpoint_path``, the whole state (weights, optimizer, schedule, the objective's generators,
    the torch RNG, the records) is saved there at every record but the last, and a call with the same
    arguments resumes from it and ends bit for bit where an uninterrupted run ends (on the same device);
    the file is removed at the end. ``checkpoint_settings`` (JSON-like) must describe everything else
    the run depends on (data, batch sizes, ...): a checkpoint written with other settings is ignored.

    Early stopping (``patience`` > 0): the record value ``monitor`` (lower is better; NaN never counts as
    better) is followed; the run stops once ``patience`` records in a row have not improved on the best,
    and the model is left with the weights of the best record. The records stop there too: the last one
    describes the weights at the stopping step, not the best record's that are returned.
    """
    _check_schedule(steps, log_every)
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=0.0)
    state = _TrainingState(model, optimizer, scheduler, objective.generators, objective)
    if patience < 0:
        raise ValueError(f"patience must be >= 0, got {patience}")

    checkpoint = None
    if checkpoint_path is not None:
        # The starting weights' digest: a second training phase must not resume a checkpoint made after
        # another first phase (other settings or data there give other starting weights).
        with torch.no_grad():
            start_digest = [float(p.double().sum()) for p in model.parameters()]
        settings = [steps, learning_rate, seed, log_every, max_grad_norm, skip_nonfinite_steps,
                    getattr(model, "config", None), checkpoint_settings, patience, monitor, start_digest]
        checkpoint = Checkpoint(checkpoint_path, settings, format="torch")
        saved = checkpoint.load()
        if saved is not None:
            state.restore(saved)
            log(f"  resuming from checkpoint at step {state.step}/{steps}")
    first_step = state.step + 1

    skipped = 0  # since the previous record
    start = time.perf_counter()
    model.train()
    for step in range(first_step, steps + 1):
        current_lr = optimizer.param_groups[0]["lr"]
        loss = objective.loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        if skip_nonfinite_steps and not torch.isfinite(grad_norm):
            skipped += 1
        else:
            optimizer.step()
        scheduler.step()
        state.step = step
        if step % log_every != 0 and step != steps:
            continue

        values, summary = objective.record()
        model.train()
        extra = {"skipped_steps": skipped} if skip_nonfinite_steps else {}
        for name, value in {"step": step, **values, "learning_rate": float(current_lr), **extra}.items():
            state.records.setdefault(name, []).append(value)
        elapsed = time.perf_counter() - start
        eta = elapsed / (step - first_step + 1) * (steps - step)
        message = f"  step {step}/{steps}  {summary}"
        if skipped:
            message += f"  {skipped} steps skipped (non-finite gradient)"
        log(message + f"  lr {current_lr:.2e}  {elapsed:.1f} s elapsed, ETA {eta:.1f} s")
        skipped = 0
        if patience:
            value = float(values[monitor])
            if value < state.best_value:  # False for NaN
                state.best_value, state.best_step, state.records_since_best = value, step, 0
                state.best_weights = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
            else:
                state.records_since_best += 1
            if state.records_since_best >= patience:
                log(f"  early stopping at step {step}: {monitor} has not improved for {patience} records; "
                    f"keeping the weights of step {state.best_step} ({monitor} {state.best_value:.4f})")
                break
        if checkpoint is not None and step < steps:
            checkpoint.save(state.snapshot())

    if patience and state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    model.eval()
    if checkpoint is not None:
        checkpoint.remove()
    return {name: _as_array(values) for name, values in state.records.items()}


def _check_schedule(steps: int, log_every: int) -> None:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")


def _as_array(values: list) -> np.ndarray:
    integer = all(isinstance(value, int) for value in values)
    return np.asarray(values, dtype=np.int64 if integer else np.float64)


class _TrainingState:
    """Everything a resumed run needs: steps done, weights, optimizer, schedule, random streams, records."""

    def __init__(self, model, optimizer, scheduler, generators: dict[str, torch.Generator], objective=None):
        self.model, self.optimizer, self.scheduler, self.generators = model, optimizer, scheduler, generators
        # An objective with state of its own (a replay buffer) has state_dict/load_state_dict.
        self.objective = objective if hasattr(objective, "state_dict") else None
        self.step = 0
        self.records: dict[str, list] = {}
        # Early stopping: the best record so far and its weights.
        self.best_value, self.best_step, self.records_since_best = math.inf, 0, 0
        self.best_weights: dict | None = None

    def snapshot(self) -> dict:
        return {"step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "generators": {name: g.get_state() for name, g in self.generators.items()},
                "torch_rng": torch.get_rng_state(), "records": self.records,
                "best": [self.best_value, self.best_step, self.records_since_best], "best_weights": self.best_weights,
                "objective": self.objective.state_dict() if self.objective is not None else None}

    def restore(self, saved: dict) -> None:
        self.step = saved["step"]
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        for name, generator in self.generators.items():
            generator.set_state(saved["generators"][name])
        torch.set_rng_state(saved["torch_rng"])
        self.records = saved["records"]
        self.best_value, self.best_step, self.records_since_best = saved["best"]
        self.best_weights = saved["best_weights"]
        if self.objective is not None:
            self.objective.load_state_dict(saved["objective"])


def model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of ``model``: those of its first floating-point buffer, else its first parameter."""
    reference = next(model.buffers(), None)
    if reference is None or not reference.is_floating_point():
        reference = next(model.parameters())
    return reference.device, reference.dtype


def training_data(data, model: torch.nn.Module, min_samples: int) -> torch.Tensor:
    """``data`` as a finite [n >= min_samples, dim] tensor on the model's device, in its dtype."""
    device, dtype = model_device_dtype(model)
    data = torch.as_tensor(data).to(device=device, dtype=dtype)
    if data.ndim != 2 or data.shape[0] < min_samples:
        raise ValueError(f"data must have shape [n >= {min_samples}, dim], got {tuple(data.shape)}")
    if not torch.isfinite(data).all():
        raise ValueError("data contains non-finite values")
    return data


# ----------------------------------------------------------------------------------------------------------
# Flows

#: The curves ``train_flow`` returns, in this order.
FLOW_CURVES = ("step", "train_nll", "validation_nll", "reverse_kl", "buffer_nll", "buffer_ess_fraction",
               "ess_fraction", "learning_rate", "nonfinite_energy", "skipped_steps")


@dataclass(frozen=True)
class BufferSettings:
    """Self-training on the flow's own importance-weighted samples (a replay buffer), see :func:`train_flow`.

    ``weight`` multiplies the buffer's NLL term (0: off); every ``refresh_every`` steps ``samples`` new flow
    samples are added; the newest ``size`` are kept.
    """

    weight: float = 0.0
    samples: int = 2048
    refresh_every: int = 50
    size: int = 50000


def train_flow(
    model: torch.nn.Module,
    data: torch.Tensor,
    *,
    reduced_energy: Callable[[torch.Tensor], torch.Tensor] | None = None,
    steps: int = 2000,
    batch_size: int = 512,
    learning_rate: float = 1e-3,
    energy_weight: float = 0.0,
    energy_batch_size: int = 256,
    validation_fraction: float = 0.1,
    seed: int = 0,
    log: Callable[[str], None] = print,
    log_every: int = 100,
    checkpoint_path: str | Path | None = None,
    ess_samples: int = 0,
    patience: int = 0,
    buffer: BufferSettings | None = None,
    data_weight: float = 1.0,
) -> dict[str, np.ndarray]:
    """Fit ``model`` (a flow with ``log_prob``, ``forward``, ``base_log_prob`` and ``sample_base``) to
    ``data`` in place.

    Loss per step: mean NLL, -log q(x), over a minibatch of training samples, plus, when
    ``energy_weight > 0`` and ``reduced_energy`` is given, ``energy_weight`` times the reverse-KL
    term mean_{z ~ base} [u(x) + log q(x)] with x = model.forward(z) (reparameterized, so it is
    differentiable in the flow parameters). ``reduced_energy`` maps a float64 tensor [b, dim] to u [b],
    differentiably. Flow samples whose energy (or log q) is not finite are dropped from that mean
    and counted; such an energy is evaluated again on the finite samples alone, so that inf/NaN in
    its backward pass (e.g. 0 * inf) cannot reach the gradient. A step whose gradient is still not
    finite is skipped (and counted) rather than applied.

    Optimization (:func:`train`): Adam with a cosine learning-rate schedule from ``learning_rate`` down
    to 0 over ``steps`` steps, gradient norm clipped to ``MAX_GRAD_NORM``. Minibatches are drawn
    uniformly with replacement from the training split. The rows of ``data`` are in time order, and
    the last :func:`validation_count` of them are held out, a contiguous block of the trajectory: frames
    drawn at random would each have autocorrelated neighbours in the training split, and the validation
    NLL would not show overfitting (0 disables validation; the validation NLL is then NaN).

    Reproducible on CPU for a given ``seed``: the global RNG is seeded, and the minibatch indices
    (seed + 1) and flow samples (seed + 2) each come from their own seeded ``torch.Generator``.

    Every ``log_every`` steps and at the last step, a record is taken and a line logged with
    ``log``. Returns numpy arrays, one entry per record:

    - ``step``: number of optimizer steps done (int);
    - ``train_nll``: mean minibatch NLL over the steps since the previous record (nats/sample);
    - ``validation_nll``: NLL on the validation split at that step (nats/sample, eval mode; on at most
      ``MAX_VALIDATION_ROWS`` rows of it, spread over it by :func:`_spread_rows`);
    - ``reverse_kl``: mean of the reverse-KL term over the steps since the previous record
      (nats/sample; NaN if not used);
    - ``ess_fraction``: Kish ESS/N of ``ess_samples`` fresh flow samples reweighted to
      exp(-reduced_energy), at that step (NaN if ``ess_samples`` is 0 or no ``reduced_energy`` is given;
      the energy term need not be on). The samples come from a generator of their own (seed + 3), so
      monitoring does not change the training;
    - ``learning_rate``: the learning rate used for the recorded step;
    - ``nonfinite_energy``: number of flow samples dropped for non-finite energy since the previous
      record (int; 0 if not used);
    - ``skipped_steps``: number of steps skipped for a non-finite gradient since the previous record.

    With ``checkpoint_path``, the whole training state (weights, optimizer, schedule, random streams,
    records) is saved there at every record, and a call with the same arguments resumes from it and
    ends bit for bit where an uninterrupted run ends (on the same device); the file is removed at the
    end. A checkpoint written with other arguments is ignored. Without it, no files are touched.

    With ``buffer`` (weight > 0, needs ``reduced_energy``): self-training on the flow's own samples. Every
    ``buffer.refresh_every`` steps, ``buffer.samples`` flow samples enter a replay buffer with their
    log-weights log w = -u - log q_old (q_old: the flow that drew them; a valid importance weight whatever
    the flow becomes, so the buffer is a weighted sample of p); each step adds ``buffer.weight`` × the NLL
    of ``batch_size`` buffer samples resampled with probability ∝ w: an unbiased minibatch estimate of
    the self-normalized Σ w̄_i (-log q(x_i)) over the buffer, which is a consistent estimate of the forward
    KL to p (up to a constant), biased by O(1/ESS) of the buffer; at a low buffer ESS a minibatch repeats
    a few samples. Unlike the MD frames it never runs out. Needs only energies, no forces. Records
    ``buffer_nll`` and the buffer's Kish ``buffer_ess_fraction`` (NaN if off).

    ``data_weight`` multiplies the NLL of ``data`` (1: maximum likelihood). With 0 the data only monitor the
    fit (``validation_nll``; ``train_nll`` is NaN, no minibatch is drawn) and another term must drive the
    training: the temperature annealing's refits learn from the replay buffer alone, with the MD of their
    temperature as a yardstick.

    With ``patience`` > 0, training stops early once the validation NLL has not improved for ``patience``
    records in a row, and the model keeps the weights of its best record (:func:`train`).

    The model is left in eval mode.
    """
    _check_schedule(steps, log_every)
    if patience and validation_fraction == 0:
        raise ValueError("early stopping (patience > 0) needs a validation split")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if energy_weight > 0 and reduced_energy is None:
        raise ValueError("energy_weight > 0 needs a reduced_energy")
    if buffer is not None and buffer.weight > 0 and reduced_energy is None:
        raise ValueError("a replay buffer needs a reduced_energy")
    if not data_weight >= 0:
        raise ValueError(f"data_weight must be >= 0, got {data_weight}")
    if data_weight == 0 and energy_weight == 0 and (buffer is None or buffer.weight == 0):
        raise ValueError("data_weight 0 needs another loss term (energy_weight > 0 or a replay buffer)")
    data = training_data(data, model, min_samples=2)

    n_validation = validation_count(len(data), validation_fraction)
    train_split, validation = data[:len(data) - n_validation], data[len(data) - n_validation:]
    if n_validation > MAX_VALIDATION_ROWS:
        validation = validation[_spread_rows(n_validation, MAX_VALIDATION_ROWS).to(validation.device)]
    objective = _FlowObjective(
        model, train_split, validation, batch_size=batch_size,
        reduced_energy=reduced_energy if energy_weight > 0 else None, energy_weight=energy_weight,
        energy_batch_size=energy_batch_size, monitor_energy=reduced_energy, ess_samples=ess_samples, seed=seed,
        buffer=buffer, data_weight=data_weight)
    settings = [batch_size, data_weight, energy_weight, energy_batch_size, validation_fraction, *data.shape, float(data.sum()),
                f"validation rows: {len(validation)} spread",
                None if buffer is None else list(vars(buffer).values())]
    curves = train(model, objective, steps=steps, learning_rate=learning_rate, seed=seed, log=log,
                   log_every=log_every, max_grad_norm=MAX_GRAD_NORM, skip_nonfinite_steps=True,
                   checkpoint_path=checkpoint_path, checkpoint_settings=settings, patience=patience)
    return {name: curves[name] for name in FLOW_CURVES}


def _spread_rows(n: int, m: int) -> torch.Tensor:
    """m distinct row indices of 0..n-1 (m <= n), increasing: one drawn at random from each of m stretches of
    n // m or n // m + 1 rows (a generator of its own, seeded the same at every call, so every record sees the
    same rows). Spread over the block like a stride, without a stride's aliasing onto rows interleaved in a
    fixed pattern (the runs or walkers of one time, which sorting MD by time interleaves)."""
    edges = torch.arange(m + 1) * n // m
    u = torch.rand(m, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return edges[:-1] + (u * (edges[1:] - edges[:-1])).long()


def validation_count(n: int, validation_fraction: float) -> int:
    """Rows of ``n`` held out for validation: ``validation_fraction`` of them, at least one when the
    fraction is positive, and at least one row always left for training."""
    n_val = int(round(validation_fraction * n))
    return min(max(n_val, 1 if validation_fraction > 0 else 0), n - 1)


class _FlowObjective:
    """Minibatch NLL plus ``energy_weight`` × reverse KL (see :func:`train_flow`), and its records.

    ``reduced_energy`` is the energy of the loss term (None: no term); ``monitor_energy`` the one the
    ESS monitor reweights to (None: no monitor).
    """

    def __init__(self, model, train_split, validation, *, batch_size, reduced_energy, energy_weight,
                 energy_batch_size, monitor_energy, ess_samples, seed, buffer: BufferSettings | None = None,
                 data_weight: float = 1.0):
        self.model, self.train_split, self.validation = model, train_split, validation
        self.data_weight = data_weight
        self.buffer = buffer if buffer is not None and buffer.weight > 0 else None
        # The flow's own samples (rows of ladder training data carry one more column, their temperature).
        self.buffer_x = train_split.new_empty((0, model.dim))
        self.buffer_log_w = torch.empty(0, dtype=torch.float64, device=train_split.device)
        self.steps_taken = 0
        self.batch_size, self.energy_batch_size = batch_size, energy_batch_size
        self.reduced_energy, self.energy_weight = reduced_energy, energy_weight
        self.monitor_energy, self.ess_samples, self.seed = monitor_energy, ess_samples, seed
        self.dtype = train_split.dtype
        device = train_split.device
        # Separate streams, so that e.g. switching the energy term on does not change the minibatches.
        self.generators = {"batch": torch.Generator(device=device).manual_seed(seed + 1),
                           "sample": torch.Generator(device=device).manual_seed(seed + 2)}
        if self.buffer is not None:
            self.generators["buffer"] = torch.Generator(device=device).manual_seed(seed + 4)
        self._reset()

    def _reset(self) -> None:
        self.nll_sum, self.nll_count = 0.0, 0
        self.rkl_sum, self.rkl_count = 0.0, 0
        self.buffer_nll_sum, self.buffer_nll_count = 0.0, 0
        self.nonfinite = 0

    def state_dict(self) -> dict:
        """What a resumed run needs beyond the model and the generators: the replay buffer."""
        return {"buffer_x": self.buffer_x, "buffer_log_w": self.buffer_log_w, "steps_taken": self.steps_taken}

    def load_state_dict(self, state: dict) -> None:
        self.buffer_x, self.buffer_log_w = state["buffer_x"], state["buffer_log_w"]
        self.steps_taken = state["steps_taken"]

    @torch.no_grad()
    def _refresh_buffer(self) -> None:
        """Add ``buffer.samples`` flow samples with their log-weights -u - log q; keep the newest ``buffer.size``.

        Each sample keeps the weight of the flow that drew it: p/q_old is a valid importance weight of a
        sample of q_old whatever the flow becomes, so the pooled buffer is a weighted sample of p.
        """
        was_training = self.model.training
        self.model.eval()
        x, log_q = self.model.sample(self.buffer.samples, generator=self.generators["buffer"])
        self.model.train(was_training)
        log_w = -self.monitor_energy(x.to(torch.float64)).to(torch.float64) - log_q.to(torch.float64)
        finite = torch.isfinite(log_w) & torch.isfinite(x).all(dim=-1)
        self.nonfinite += int((~finite).sum().item())
        self.buffer_x = torch.cat([self.buffer_x, x[finite].to(self.dtype)])[-self.buffer.size:]
        self.buffer_log_w = torch.cat([self.buffer_log_w, log_w[finite]])[-self.buffer.size:]

    def _buffer_nll(self) -> torch.Tensor | None:
        """Forward KL to p on the buffer: NLL of samples resampled with probability ∝ their weights."""
        if self.steps_taken % self.buffer.refresh_every == 0:
            self._refresh_buffer()
        self.steps_taken += 1
        if not len(self.buffer_log_w):
            return None
        probabilities = torch.softmax(self.buffer_log_w, dim=0)
        idx = torch.multinomial(probabilities, self.batch_size, replacement=True, generator=self.generators["buffer"])
        return -self.model.log_prob(self.buffer_x[idx]).mean()

    def loss(self) -> torch.Tensor:
        loss = 0.0
        if self.data_weight > 0:
            n_train = self.train_split.shape[0]
            idx = torch.randint(n_train, (self.batch_size,), generator=self.generators["batch"],
                                device=self.train_split.device)
            nll = -self.model.log_prob(self.train_split[idx]).mean()
            loss = self.data_weight * nll
            self.nll_sum += nll.item()
            self.nll_count += 1
        if self.reduced_energy is not None:
            z = self.model.sample_base(self.energy_batch_size, generator=self.generators["sample"])
            rkl, dropped = _reverse_kl(self.model, z, self.reduced_energy)
            self.nonfinite += dropped
            if rkl is not None:
                loss = loss + self.energy_weight * rkl.to(self.dtype)
                self.rkl_sum += rkl.item()
                self.rkl_count += 1
        if self.buffer is not None:
            buffer_nll = self._buffer_nll()
            if buffer_nll is not None:
                loss = loss + self.buffer.weight * buffer_nll
                self.buffer_nll_sum += buffer_nll.item()
                self.buffer_nll_count += 1
        if not torch.is_tensor(loss):
            # No term this step (every energy non-finite, an empty buffer): a zero gradient.
            loss = sum(parameter.sum() * 0.0 for parameter in self.model.parameters())
        return loss

    def record(self) -> tuple[dict, str]:
        val_nll = _validation_nll(self.model, self.validation)
        train_nll = self.nll_sum / self.nll_count if self.nll_count else math.nan
        rkl_mean = self.rkl_sum / self.rkl_count if self.rkl_count else math.nan
        ess = _flow_ess_fraction(self.model, self.monitor_energy, self.ess_samples, self.seed)
        buffer_nll = self.buffer_nll_sum / self.buffer_nll_count if self.buffer_nll_count else math.nan
        buffer_ess = ess_fraction(self.buffer_log_w.cpu().numpy()) if len(self.buffer_log_w) else math.nan
        values = {"train_nll": train_nll, "validation_nll": val_nll, "reverse_kl": rkl_mean,
                  "buffer_nll": buffer_nll, "buffer_ess_fraction": buffer_ess,
                  "ess_fraction": ess, "nonfinite_energy": self.nonfinite}
        summary = (f"train NLL {train_nll:.4f}  " if math.isfinite(train_nll) else "") + f"val NLL {val_nll:.4f}"
        if self.reduced_energy is not None:
            summary += f"  reverse KL {rkl_mean:.4f}"
        if self.buffer is not None:
            summary += f"  buffer NLL {buffer_nll:.4f} (buffer {len(self.buffer_log_w)}, ESS/N {buffer_ess:.3f})"
        if self.nonfinite:
            summary += f" ({self.nonfinite} non-finite energies dropped)"
        if math.isfinite(ess):
            summary += f"  ESS/N {ess:.4f}"
        self._reset()
        return values, summary


def _reverse_kl(model, z, reduced_energy) -> tuple[torch.Tensor | None, int]:
    """mean over finite samples of u(x) + log q(x), x = forward(z), in float64; and the number dropped.

    Returns (None, n_dropped) when no sample is finite.
    """
    x, log_det = model.forward(z)
    log_q = (model.base_log_prob(z) - log_det).to(torch.float64)
    x64 = x.to(torch.float64)
    u = reduced_energy(x64).to(torch.float64)
    finite = torch.isfinite(u) & torch.isfinite(log_q) & torch.isfinite(x64).all(dim=-1)
    n_dropped = int((~finite).sum().item())
    if n_dropped == z.shape[0]:
        return None, n_dropped
    if n_dropped:
        # Masking u after the fact is not enough: the backward pass of the energy for the dropped
        # samples would still run and can produce NaN (0 * inf). Evaluate it again on the kept ones.
        u = reduced_energy(x64[finite]).to(torch.float64)
        log_q = log_q[finite]
        kept = torch.isfinite(u)  # the energy is expected to be deterministic; guard anyway
        if not kept.all():
            n_dropped += int((~kept).sum().item())
            return None, n_dropped
    return (u + log_q).mean(), n_dropped


@torch.no_grad()
def _flow_ess_fraction(model, reduced_energy, n: int, seed: int) -> float:
    """Kish ESS/N of n flow samples with weights exp(-u - log q); NaN without an energy or with n = 0."""
    if reduced_energy is None or n == 0:
        return math.nan
    model.eval()
    # The same noise at every record (a generator of its own): the curve shows the model changing,
    # not the noise, and the training streams are untouched.
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed + 3)
    x, log_q = model.sample(n, generator=generator)
    log_w = -reduced_energy(x.to(torch.float64)).to(torch.float64) - log_q.to(torch.float64)
    return ess_fraction(log_w.cpu().numpy())


@torch.no_grad()
def _validation_nll(model, validation: torch.Tensor) -> float:
    """Mean -log q over the validation set (NaN if empty), in eval mode."""
    if validation.shape[0] == 0:
        return math.nan
    model.eval()
    total = 0.0
    for chunk in validation.split(_EVAL_CHUNK):
        total += -model.log_prob(chunk).sum().item()
    return total / validation.shape[0]
