"""How the models treat torsions: circular statistics of MD data and the windows torsions are unwrapped into.

A torsion whose MD samples are narrow is modelled as a real number around its circular mean (a window
(c - π, c + π]); a wide one either stays on the circle (the flows) or is cut where the data are thinnest
(the score models, whose diffusion needs real coordinates). Angles in radians, tensors float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: A torsion whose MD samples have a mean resultant length |E[exp(iθ)]| above this (a circular standard
#: deviation below about 25°) is modelled as a real number around its circular mean, not on the circle.
NARROW_TORSION_RESULTANT = 0.9

#: Histogram bins for finding the least-populated angle of a wide torsion (10° each).
TORSION_CUT_BINS = 36


def circular_statistics(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(circular mean in (-π, π], mean resultant length |E[exp(iθ)]|) of each column of angles [n, d]."""
    mean_cos, mean_sin = angles.cos().mean(0), angles.sin().mean(0)
    return torch.atan2(mean_sin, mean_cos), torch.sqrt(mean_cos**2 + mean_sin**2)


def narrow_window_centres(ic: torch.Tensor, is_torsion: torch.Tensor):
    """(window centre per coordinate, NaN where none; circular mask; circular mean) for the flows: narrow
    torsions get a window at their circular mean, wide ones stay circular."""
    mean_angle, resultant = circular_statistics(ic)
    narrow = is_torsion & (resultant > NARROW_TORSION_RESULTANT)
    centres = torch.where(narrow, mean_angle, torch.full_like(mean_angle, float("nan")))
    return centres, is_torsion & ~narrow, mean_angle


def cut_window_centres(ic: torch.Tensor, is_torsion: torch.Tensor) -> torch.Tensor:
    """Window centre per coordinate (NaN for bonds and angles) for the score models: every torsion gets one.

    Narrow torsions are centred on their circular mean; wide ones on the angle opposite their
    least-populated 10° bin, so the cut falls where there are (almost) no samples.
    """
    mean_angle, resultant = circular_statistics(ic)
    centres = torch.full((ic.shape[1],), math.nan, dtype=torch.float64)
    edges = np.linspace(-math.pi, math.pi, TORSION_CUT_BINS + 1)
    for column in np.flatnonzero(is_torsion.numpy()):
        if resultant[column] > NARROW_TORSION_RESULTANT:
            centres[column] = float(mean_angle[column])
            continue
        counts, _ = np.histogram(ic[:, column].numpy(), bins=edges)
        emptiest = int(np.argmin(counts))
        cut = 0.5 * (edges[emptiest] + edges[emptiest + 1])
        centres[column] = math.remainder(cut + math.pi, 2 * math.pi)
    return centres
