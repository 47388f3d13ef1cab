"""Held-out validation of the flow is held out in time: the last stretch of every walker's trajectory."""

import numpy as np
import pytest
import torch
import xarray as xr

from boltzflow.flows import SplineCouplingFlow
from boltzflow.stages.flow import validation_split
from boltzflow.training import train_flow, validation_count


def _walkers_md(frames=40, walkers=7, seed=0):
    """Toy MD layout: frame-major samples, each frame's time repeated per walker, stored shuffled."""
    time = np.repeat(np.arange(1, frames + 1) * 0.5, walkers)
    walker = np.tile(np.arange(walkers), frames)
    order = np.random.default_rng(seed).permutation(len(time))
    return xr.Dataset({"time": ("sample", time[order]), "walker": ("sample", walker[order])})


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_validation_is_the_last_block_in_time_for_every_walker(fraction):
    md = _walkers_md()
    train, validation = validation_split(md, fraction)
    time, walker = md["time"].values, md["walker"].values
    assert sorted([*train, *validation]) == list(range(md.sizes["sample"]))
    assert len(validation) == round(fraction * md.sizes["sample"])
    assert time[validation].min() >= time[train].max()
    for w in range(7):
        # A suffix of the walker's own time series: every validation frame after every training frame.
        own_train, own_validation = time[train][walker[train] == w], time[validation][walker[validation] == w]
        assert len(own_validation) > 0
        assert own_validation.min() > own_train.max()
        # Contiguous: no frame of the walker missing between its first validation frame and the end.
        np.testing.assert_allclose(np.sort(own_validation), np.arange(own_validation.min(), 20.0 + 1e-9, 0.5))


def test_replica_state_frames_split_at_one_time():
    # One state of replica exchange: one frame per time, in time order.
    md = xr.Dataset({"time": ("sample", np.arange(1, 101) * 0.2)})
    train, validation = validation_split(md, 0.2)
    np.testing.assert_array_equal(validation, np.arange(80, 100))
    np.testing.assert_array_equal(train, np.arange(80))


def test_train_flow_holds_out_the_last_rows():
    # Training rows from N(0, 1), the last rows (the validation block) far out at 8: a flow fitted to the
    # training rows alone assigns them a far lower likelihood; a random split would mix them in.
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    data = torch.cat([torch.randn(900, 2, generator=generator), 8.0 + 0.1 * torch.randn(100, 2, generator=generator)])
    assert validation_count(len(data), 0.1) == 100
    curves = train_flow(SplineCouplingFlow(2, n_layers=2, hidden=16), data, steps=200, batch_size=128,
                        learning_rate=1e-2, validation_fraction=0.1, log=lambda _: None, log_every=100)
    assert curves["train_nll"][-1] < 3.5
    assert curves["validation_nll"][-1] > curves["train_nll"][-1] + 10
