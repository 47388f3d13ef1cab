"""Drawing weighted samples from a trained model: x ~ q, with log q(x) and the target's reduced energy u(x)."""

from __future__ import annotations

import time

import numpy as np
import torch


@torch.no_grad()
def sample_flow(flow, reduced_energy, n_samples: int, seed: int, batch_size: int = 8192, log=print):
    """Draw ``n_samples`` from ``flow`` in batches; returns numpy (x [n, dim], log_q [n], u [n]).

    ``reduced_energy`` maps a float64 tensor [b, dim] to u [b]. The base noise comes from a CPU
    generator, so a seed gives the same noise on every device (and the same samples on CPU).
    Energies that come out non-finite are returned as they are; the estimators give them zero weight.
    """
    generator = torch.Generator().manual_seed(seed)
    xs, log_qs, us = [], [], []
    start = time.perf_counter()
    done = 0
    while done < n_samples:
        size = min(batch_size, n_samples - done)
        x, log_q = flow.sample(size, generator=generator)
        x = x.double()
        xs.append(x.cpu().numpy())
        log_qs.append(log_q.double().cpu().numpy())
        us.append(reduced_energy(x).cpu().numpy())
        done += size
        elapsed = time.perf_counter() - start
        log(f"  sampled {done}/{n_samples}  {done / elapsed:,.0f} samples/s")
    return np.concatenate(xs), np.concatenate(log_qs), np.concatenate(us)
