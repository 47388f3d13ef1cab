"""Training normalizing flows on samples (maximum likelihood), optionally with a reverse-KL energy term.

Units: all losses are in nats per sample (dimensionless). The NLL is -log q(x) averaged over samples,
a density in the units of x, so its absolute value depends on those units; differences and the
reverse KL E_q[u(x) + log q(x)] = KL(q || p) - log Z are what carry meaning. ``u`` is the reduced
(dimensionless) energy, u = E / kT.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

#: Gradients are clipped to this total norm: a single bad batch (a sample from the flow in a steep
#: region of the energy) should not throw the flow far away.
MAX_GRAD_NORM = 10.0

#: Validation NLL is evaluated in chunks of this many samples, to bound memory.
_EVAL_CHUNK = 8192


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

    Optimization: Adam with a cosine learning-rate schedule from ``learning_rate`` down to 0 over
    ``steps`` steps, gradient norm clipped to ``MAX_GRAD_NORM``. Minibatches are drawn uniformly
    with replacement from the training split. A random ``validation_fraction`` of ``data`` is held
    out (0 disables validation; the validation NLL is then NaN).

    Reproducible on CPU for a given ``seed``: the global RNG is seeded, and the validation split,
    minibatch indices and flow samples each come from their own seeded ``torch.Generator``.

    Every ``log_every`` steps and at the last step, a record is taken and a line logged with
    ``log``. Returns numpy arrays, one entry per record:

    - ``step``: number of optimizer steps done (int);
    - ``train_nll``: mean minibatch NLL over the steps since the previous record (nats/sample);
    - ``validation_nll``: NLL on the whole validation split at that step (nats/sample, eval mode);
    - ``reverse_kl``: mean of the reverse-KL term over the steps since the previous record
      (nats/sample; NaN if not used);
    - ``ess_fraction``: Kish ESS/N of ``ess_samples`` fresh flow samples reweighted to
      exp(-reduced_energy), at that step (NaN if ``ess_samples`` is 0 or no ``reduced_energy`` is given;
      the energy term need not be on). The samples come from a generator of their own, so monitoring
      does not change the training;
    - ``learning_rate``: the learning rate used for the recorded step;
    - ``nonfinite_energy``: number of flow samples dropped for non-finite energy since the previous
      record (int; 0 if not used);
    - ``skipped_steps``: number of steps skipped for a non-finite gradient since the previous record.

    With ``checkpoint_path``, the whole training state (weights, optimizer, schedule, random streams,
    records) is saved there at every record, and a call with the same arguments resumes from it and
    ends bit for bit where an uninterrupted run ends (on the same device); the file is removed at the
    end. A checkpoint written with other arguments is ignored. Without it, no files are touched.

    The model is left in eval mode.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    use_energy = energy_weight > 0 and reduced_energy is not None
    if energy_weight > 0 and reduced_energy is None:
        raise ValueError("energy_weight > 0 needs a reduced_energy")

    reference = next(model.buffers(), None)
    if reference is None or not reference.is_floating_point():
        reference = next(model.parameters())
    device, dtype = reference.device, reference.dtype
    data = torch.as_tensor(data).to(device=device, dtype=dtype)
    if data.ndim != 2 or data.shape[0] < 2:
        raise ValueError(f"data must have shape [n >= 2, dim], got {tuple(data.shape)}")
    if not torch.isfinite(data).all():
        raise ValueError("data contains non-finite values")

    torch.manual_seed(seed)
    # Separate streams, so that e.g. switching the energy term on does not change the minibatches.
    split_gen = torch.Generator(device=device).manual_seed(seed)
    batch_gen = torch.Generator(device=device).manual_seed(seed + 1)
    sample_gen = torch.Generator(device=device).manual_seed(seed + 2)

    n = data.shape[0]
    n_val = int(round(validation_fraction * n))
    n_val = min(max(n_val, 1 if validation_fraction > 0 else 0), n - 1)
    permutation = torch.randperm(n, generator=split_gen, device=device)
    validation, train = data[permutation[:n_val]], data[permutation[n_val:]]
    n_train = train.shape[0]
    dim = data.shape[1]

    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=0.0)

    records: dict[str, list] = {
        key: []
        for key in ("step", "train_nll", "validation_nll", "reverse_kl", "ess_fraction", "learning_rate",
                    "nonfinite_energy", "skipped_steps")
    }
    # Accumulators since the previous record.
    nll_sum, nll_count = 0.0, 0
    rkl_sum, rkl_count = 0.0, 0
    nonfinite, skipped = 0, 0

    checkpoint = None
    first_step = 1
    if checkpoint_path is not None:
        key = repr((steps, batch_size, learning_rate, energy_weight, energy_batch_size, validation_fraction,
                    seed, log_every, n, dim, float(data.sum())))
        checkpoint = _TrainingCheckpoint(Path(checkpoint_path), key)
        saved = checkpoint.load()
        if saved is not None:
            first_step = saved["step"] + 1
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            batch_gen.set_state(saved["batch_gen"])
            sample_gen.set_state(saved["sample_gen"])
            torch.set_rng_state(saved["torch_rng"])
            records = saved["records"]
            log(f"  resuming from checkpoint at step {saved['step']}/{steps}")

    start = time.perf_counter()
    model.train()
    for step in range(first_step, steps + 1):
        current_lr = optimizer.param_groups[0]["lr"]
        idx = torch.randint(n_train, (batch_size,), generator=batch_gen, device=device)
        nll = -model.log_prob(train[idx]).mean()
        loss = nll

        if use_energy:
            z = model.sample_base(energy_batch_size, generator=sample_gen)
            rkl, dropped = _reverse_kl(model, z, reduced_energy)
            nonfinite += dropped
            if rkl is not None:
                loss = loss + energy_weight * rkl.to(dtype)
                rkl_sum += rkl.item()
                rkl_count += 1

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        if torch.isfinite(grad_norm):
            optimizer.step()
        else:
            skipped += 1
        scheduler.step()
        nll_sum += nll.item()
        nll_count += 1

        if step % log_every == 0 or step == steps:
            val_nll = _validation_nll(model, validation)
            model.train()
            train_nll = nll_sum / nll_count
            rkl_mean = rkl_sum / rkl_count if rkl_count else math.nan
            records["step"].append(step)
            records["train_nll"].append(train_nll)
            records["validation_nll"].append(val_nll)
            records["reverse_kl"].append(rkl_mean)
            ess = _ess_fraction(model, reduced_energy, ess_samples, seed) if ess_samples else math.nan
            model.train()
            records["ess_fraction"].append(ess)
            records["learning_rate"].append(current_lr)
            records["nonfinite_energy"].append(nonfinite)
            records["skipped_steps"].append(skipped)

            elapsed = time.perf_counter() - start
            eta = elapsed / (step - first_step + 1) * (steps - step)
            message = f"  step {step}/{steps}  train NLL {train_nll:.4f}  val NLL {val_nll:.4f}"
            if use_energy:
                message += f"  reverse KL {rkl_mean:.4f}"
                if nonfinite:
                    message += f" ({nonfinite} non-finite energies dropped)"
            if math.isfinite(ess):
                message += f"  ESS/N {ess:.4f}"
            if skipped:
                message += f"  {skipped} steps skipped (non-finite gradient)"
            message += f"  lr {current_lr:.2e}  {elapsed:.1f} s elapsed, ETA {eta:.1f} s"
            log(message)
            nll_sum, nll_count, rkl_sum, rkl_count, nonfinite, skipped = 0.0, 0, 0.0, 0, 0, 0
            if checkpoint is not None and step < steps:
                checkpoint.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "scheduler": scheduler.state_dict(), "batch_gen": batch_gen.get_state(),
                                 "sample_gen": sample_gen.get_state(), "torch_rng": torch.get_rng_state(),
                                 "records": records})

    model.eval()
    if checkpoint is not None:
        checkpoint.remove()
    int_keys = {"step", "nonfinite_energy", "skipped_steps"}
    return {
        key: np.asarray(values, dtype=np.int64 if key in int_keys else np.float64) for key, values in records.items()
    }


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
def _ess_fraction(model, reduced_energy, n: int, seed: int) -> float:
    """Kish ESS/N of n flow samples with weights exp(-u - log q); NaN without an energy."""
    if reduced_energy is None:
        return math.nan
    model.eval()
    # The same noise at every record (a generator of its own): the curve shows the model changing,
    # not the noise, and the training streams are untouched.
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed + 3)
    x, log_q = model.sample(n, generator=generator)
    log_w = -reduced_energy(x.to(torch.float64)).to(torch.float64) - log_q.to(torch.float64)
    log_w = torch.where(torch.isfinite(log_w), log_w, torch.full_like(log_w, -math.inf))
    if not torch.isfinite(log_w).any():
        return 0.0
    return float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)) / n)


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


class _TrainingCheckpoint:
    """One file with the training state, written atomically, read with ``weights_only=True``."""

    def __init__(self, path: Path, key: str):
        self.path = path
        self.key = key

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        saved = torch.load(self.path, weights_only=True, map_location="cpu")
        return saved if saved.get("key") == self.key else None

    def save(self, state: dict) -> None:
        from boltzflow.io import atomic_path

        with atomic_path(self.path) as temporary:
            torch.save({**state, "key": self.key}, temporary)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
