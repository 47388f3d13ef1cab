"""Drawing weighted samples from a trained model: x ~ q, with log q(x) and the target's reduced energy u(x)."""

from __future__ import annotations

import time

import numpy as np


def sample_flow(flow, reduced_energy, n_samples: int, seed: int, batch_size: int = 8192, log=print):
    """Draw ``n_samples`` from ``flow`` in batches; returns numpy (x [n, dim], log_q [n], u [n]).

    ``reduced_energy`` maps a float64 tensor [b, dim] to u [b]. The base noise comes from a CPU
    generator, so a seed gives the same noise on every device (and the same samples on CPU).
    Energies that come out non-finite are returned as they are; the estimators give them zero weight.
    """
    import torch  # here, so that the MCMC below runs in the analysis env without torch

    with torch.no_grad():
        return _sample_flow(flow, reduced_energy, n_samples, seed, batch_size, log, torch)


def _sample_flow(flow, reduced_energy, n_samples, seed, batch_size, log, torch):
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
        log(f"  sampled {done}/{n_samples}  {done / elapsed:,.1f} samples/s  "
            f"ETA {elapsed / done * (n_samples - done):.0f} s")
    return np.concatenate(xs), np.concatenate(log_qs), np.concatenate(us)


def independence_metropolis(log_w: np.ndarray, n_chains: int, burn_in: int, seed: int):
    """Independence Metropolis–Hastings with the model as proposal, over a stream of its weighted draws.

    The draws (log-weights ``log_w`` [n], in the order drawn) are dealt to ``n_chains`` chains in
    turn; each chain starts at its first draw and accepts the next proposal with probability
    min(1, w'/w), which leaves the target invariant for any proposal q that covers it (Timewarp's
    accept step without the time conditioning). Non-finite log-weights are never accepted (and a chain
    starting on one leaves it at its first finite proposal). With an estimated weight that is unbiased
    (flow perturbation) this is pseudo-marginal MH, still exact.

    Returns (indices into the draws of the chain states after ``burn_in`` steps per chain, [kept],
    acceptance rate over all steps after the first).
    """
    rng = np.random.default_rng(seed)
    log_w = np.where(np.isfinite(log_w), log_w, -np.inf)
    n = len(log_w) // n_chains * n_chains
    if n_chains < 1 or n // n_chains <= burn_in:
        raise ValueError(f"need more than burn_in = {burn_in} draws per chain, got {len(log_w)} draws "
                         f"for {n_chains} chains")
    proposals = np.arange(n).reshape(-1, n_chains)  # row k: the k-th proposal of every chain
    current = proposals[0].copy()
    kept, accepted = [], 0
    for step in range(1, proposals.shape[0]):
        candidate = proposals[step]
        log_ratio = log_w[candidate] - log_w[current]
        log_ratio = np.where(np.isneginf(log_w[current]) & np.isfinite(log_w[candidate]), np.inf, log_ratio)
        accept = np.log(rng.random(n_chains)) < np.nan_to_num(log_ratio, nan=-np.inf)
        current = np.where(accept, candidate, current)
        accepted += int(accept.sum())
        if step >= burn_in:
            kept.append(current.copy())
    rate = accepted / (n_chains * (proposals.shape[0] - 1))
    return np.concatenate(kept), rate
