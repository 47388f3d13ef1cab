"""Figures (seaborn/matplotlib) drawn from the netCDF outputs; each function returns a Figure.

Free energies are plotted in kT at the target temperature, positions in nm.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # figures are files; no display on a cluster node

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
import xarray as xr  # noqa: E402

LABELS = {"mbar": "MD (MBAR)", "flow": "flow, reweighted", "flow_raw": "flow, unweighted"}


def _label(estimator: str) -> str:
    return LABELS.get(estimator, estimator)


def free_energy_surfaces(fes_xy: xr.Dataset, max_kt: float = 10.0, style: str = "ticks"):
    """One panel per estimator: F(x, y) shifted to a minimum of 0, clipped at ``max_kt``."""
    sns.set_theme(style=style)
    estimators = [str(e) for e in fes_xy["estimator"].values]
    fig, axes = plt.subplots(1, len(estimators), figsize=(4.2 * len(estimators), 3.8),
                             sharex=True, sharey=True, constrained_layout=True)
    axes = np.atleast_1d(axes)
    levels = np.linspace(0, max_kt, 21)
    for ax, estimator in zip(axes, estimators):
        surface = fes_xy["F"].sel(estimator=estimator)
        shifted = (surface - surface.min()).clip(max=max_kt)
        mesh = ax.contourf(fes_xy["x"], fes_xy["y"], shifted.T, levels=levels, cmap="viridis")
        ax.set_title(_label(estimator))
        ax.set_xlabel("x / nm")
    axes[0].set_ylabel("y / nm")
    fig.colorbar(mesh, ax=axes, label="F / kT")
    return fig


def free_energy_profiles(profiles: dict[str, xr.Dataset], style: str = "ticks"):
    """1D profiles F(cv) per estimator with ±1 standard-error bands, one panel per CV."""
    sns.set_theme(style=style)
    fig, axes = plt.subplots(1, len(profiles), figsize=(5 * len(profiles), 3.6), constrained_layout=True)
    axes = np.atleast_1d(axes)
    palette = sns.color_palette("colorblind")
    for ax, (cv, fes) in zip(axes, profiles.items()):
        for colour, estimator in zip(palette, fes["estimator"].values):
            f = fes["F"].sel(estimator=estimator).values
            df = fes["dF"].sel(estimator=estimator).values
            shift = np.nanmin(fes["F"].sel(estimator="mbar").values)
            centres = fes[cv].values
            ax.plot(centres, f - shift, color=colour, label=_label(str(estimator)))
            ax.fill_between(centres, f - df - shift, f + df - shift, color=colour, alpha=0.25, linewidth=0)
        ax.set_xlabel(f"{cv} / nm")
        ax.set_ylabel("F / kT")
    axes[-1].legend(frameon=False)
    return fig


def log_weight_histogram(log_w: np.ndarray, ess_fraction: float, style: str = "ticks"):
    """Histogram of finite log-weights, shifted so that the largest is 0."""
    sns.set_theme(style=style)
    finite = log_w[np.isfinite(log_w)]
    fig, ax = plt.subplots(figsize=(5, 3.6), constrained_layout=True)
    sns.histplot(finite - finite.max(), bins=80, ax=ax, color="C0")
    ax.set_xlabel("ln w − max ln w")
    ax.set_ylabel("samples")
    ax.set_title(f"ESS/N = {ess_fraction:.3f}, {len(log_w) - len(finite)} dropped")
    return fig


def training_curves(curves: xr.Dataset, style: str = "ticks"):
    """Training and validation negative log-likelihood (and reverse KL if used) against optimizer step."""
    sns.set_theme(style=style)
    fig, ax = plt.subplots(figsize=(5, 3.6), constrained_layout=True)
    ax.plot(curves["step"], curves["train_nll"], label="train NLL")
    ax.plot(curves["step"], curves["validation_nll"], label="validation NLL")
    if np.isfinite(curves["reverse_kl"].values).any():
        ax.plot(curves["step"], curves["reverse_kl"], label="reverse KL term")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("nats per sample")
    ax.legend(frameon=False)
    return fig


def save_figure(figure, path) -> None:
    """Save atomically (a half-written PNG never carries the final name) and free the figure."""
    from boltzflow.io import atomic_path

    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=150)
    plt.close(figure)
