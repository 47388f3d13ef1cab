"""Model samples as trajectories to look at: every sample, and an ensemble drawn by importance weight."""

from __future__ import annotations

import numpy as np
import xarray as xr

from boltzflow import estimators
from boltzflow.settings import SampleTrajectorySettings
from boltzflow.stages.datasets import variable


def sample_trajectories_stage(samples: xr.Dataset, settings: SampleTrajectorySettings,
                              log=print) -> tuple[xr.Dataset, xr.Dataset]:
    """(every sample, the resampled ensemble) of a samples file, as the frames of two AMBER trajectories.

    Each dataset holds ``positions`` [frame, atom, spatial] in nm and ``sample``, the index of each frame's
    sample in the samples file (the trajectories store it as the frame time, so that a frame leads back to
    its sample). The first has every sample with finite positions, in order. The second has
    ``settings.resampled_frames`` draws with replacement, each sample with probability w / Σw from the
    samples' ``log_w``: the weights the reweighting uses (zero for a non-finite energy or density, or outside
    the coordinate map; equal for MCMC states), so its frames are an equally weighted ensemble of the
    target, as far as the weights are right. Without any finite weight it has no frames.
    """
    positions = samples["positions"].values
    finite = np.isfinite(positions.reshape(len(positions), -1)).all(axis=1)
    log_w = np.where(finite, samples["log_w"].values, -np.inf)
    every = np.flatnonzero(finite)
    drawn = estimators.draw_by_weight(log_w, settings.resampled_frames, settings.seed)
    if len(drawn):
        log(f"resampled {len(drawn)} frames by weight from {len(np.unique(drawn))} distinct samples of "
            f"{len(log_w)} (Kish ESS {estimators.effective_samples(log_w):.0f})")
    else:
        log(f"no sample of {len(log_w)} has a finite weight: the resampled trajectory has no frames")
    if len(every) < len(positions):
        log(f"left {len(positions) - len(every)} samples with non-finite positions out of the trajectory")
    return _frames(positions, every, "sample"), _frames(positions, drawn, "sample drawn by importance weight")


def _frames(positions: np.ndarray, index: np.ndarray, what: str) -> xr.Dataset:
    return xr.Dataset({
        "positions": variable(("frame", "atom", "spatial"), positions[index], "nm", "Cartesian positions"),
        "sample": variable("frame", index, "1", f"index in the samples file of the {what}"),
    }, coords={"spatial": ["x", "y", "z"]})
