"""Figures (seaborn/matplotlib) drawn from the netCDF outputs; each function returns a Figure.

Free energies are plotted in kT at the target temperature; CV axes carry the units stored with them.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # figures are files; no display on a cluster node

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import xarray as xr

from boltzflow.estimator_table import label
from boltzflow.units import kt_kj_mol


def _surface_variable(dataset: xr.Dataset) -> str:
    return next(name for name in dataset.data_vars if name.startswith("F_"))


def _axis_label(dataset: xr.Dataset, cv: str) -> str:
    return f"{cv} / {dataset[cv].attrs.get('units', '')}".rstrip(" /")


def _panel_grid(n_panels: int, panel_height: float, **kwargs):
    """A figure with n panels in rows of at most four, the unused ones hidden; axes as a 2D array."""
    columns = min(4, n_panels)
    rows = -(-n_panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, panel_height * rows), constrained_layout=True,
                             squeeze=False, **kwargs)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def free_energy_surfaces(surface: xr.Dataset, max_kt: float = 10.0, style: str = "ticks"):
    """One panel per estimator: F over the first two CVs, shifted to a minimum of 0, clipped at ``max_kt``."""
    sns.set_theme(style=style)
    name = _surface_variable(surface)
    first, second = [d for d in surface[name].dims if d != "estimator"]
    estimators = [str(e) for e in surface["estimator"].values]
    fig, axes = _panel_grid(len(estimators), 3.6, sharex=True, sharey=True)
    levels = np.linspace(0, max_kt, 21)
    for ax, estimator in zip(axes.flat, estimators):
        values = surface[name].sel(estimator=estimator)
        shifted = (values - values.min()).clip(max=max_kt)
        mesh = ax.contourf(surface[first], surface[second], shifted.T, levels=levels, cmap="viridis")
        ax.set_title(label(estimator))
    for ax in axes[-1]:
        ax.set_xlabel(_axis_label(surface, first))
    for ax in axes[:, 0]:
        ax.set_ylabel(_axis_label(surface, second))
    fig.colorbar(mesh, ax=axes, label="F / kT")
    return fig


def free_energy_profiles(profiles: xr.Dataset, style: str = "ticks"):
    """1D profiles F(cv) per estimator with ±1 standard-error bands, one panel per CV."""
    sns.set_theme(style=style)
    cvs = [name[2:] for name in profiles.data_vars if name.startswith("F_")]
    fig, axes = plt.subplots(1, len(cvs), figsize=(5 * len(cvs), 3.6), constrained_layout=True)
    axes = np.atleast_1d(axes)
    palette = sns.color_palette("colorblind")
    for ax, cv in zip(axes, cvs):
        shift = np.nanmin(profiles[f"F_{cv}"].sel(estimator="mbar").values)
        for colour, estimator in zip(palette, profiles["estimator"].values):
            f = profiles[f"F_{cv}"].sel(estimator=estimator).values
            df = profiles[f"dF_{cv}"].sel(estimator=estimator).values
            centres = profiles[cv].values
            ax.plot(centres, f - shift, color=colour, label=label(str(estimator)))
            ax.fill_between(centres, f - df - shift, f + df - shift, color=colour, alpha=0.25, linewidth=0)
        ax.set_xlabel(_axis_label(profiles, cv))
        ax.set_ylabel("F / kT")
    axes[-1].legend(frameon=False)
    return fig


def log_weight_histogram(log_ws: dict[str, np.ndarray], ess_fractions: dict[str, float], style: str = "ticks"):
    """One panel per estimator: histogram of finite log-weights, shifted so that the largest is 0."""
    sns.set_theme(style=style)
    names = list(log_ws)
    fig, axes = _panel_grid(len(names), 3.3)
    for ax, name in zip(axes.flat, names):
        log_w = log_ws[name]
        finite = log_w[np.isfinite(log_w)]
        if finite.size:
            sns.histplot(finite - finite.max(), bins=80, ax=ax, color="C0")
        ax.set_xlabel("ln w − max ln w")
        ax.set_ylabel("samples")
        ax.set_title(f"{label(name)}\nESS/N = {ess_fractions[name]:.3g}, {len(log_w) - len(finite)} dropped",
                     fontsize=9)
    return fig


def cost_figure(summary: xr.Dataset, style: str = "ticks"):
    """CPU seconds against the ΔF error (vs MBAR) and ESS/N, one point per estimator.

    The ΔF error is the root mean square over the non-reference states of (ΔF - ΔF_MBAR); the error
    bar is the root mean square of the combined standard errors.
    """
    sns.set_theme(style=style)
    names = [str(e) for e in summary["estimator"].values if str(e) != "mbar"]
    reference = summary["delta_f"].sel(estimator="mbar").values[1:]
    reference_err = summary["delta_f_err"].sel(estimator="mbar").values[1:]
    fig, (ax_err, ax_ess) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    palette = sns.color_palette("colorblind", len(names) + 1)
    mbar_cost = float(summary["cpu_seconds"].sel(estimator="mbar"))
    for colour, name in zip(palette, names):
        cost = float(summary["cpu_seconds"].sel(estimator=name))
        values = summary["delta_f"].sel(estimator=name).values[1:]
        errors = summary["delta_f_err"].sel(estimator=name).values[1:]
        rms = float(np.sqrt(np.nanmean((values - reference) ** 2)))
        bar = float(np.sqrt(np.nanmean(errors**2 + reference_err**2)))
        ax_err.errorbar(cost, rms, yerr=bar, fmt="o", color=colour, label=label(name), capsize=3)
        ess = float(summary["ess_fraction"].sel(estimator=name))
        if np.isfinite(ess):
            ax_ess.plot(cost, ess, "o", color=colour, label=label(name))
    ax_err.axvline(mbar_cost, color="k", ls=":", lw=1, label="MD + MBAR cost")
    ax_ess.axvline(mbar_cost, color="k", ls=":", lw=1)
    for ax in (ax_err, ax_ess):
        ax.set_xscale("log")
        ax.set_xlabel("CPU seconds (training + sampling + reweighting)")
    ax_err.set_ylabel("RMS of ΔF − ΔF(MBAR) / kT")
    ax_ess.set_yscale("log")
    ax_ess.set_ylabel("ESS / N")
    ax_err.legend(frameon=False, fontsize=8)
    return fig


def score_training_curves(curves: xr.Dataset, style: str = "ticks"):
    """Denoising score-matching loss over training."""
    sns.set_theme(style=style)
    fig, ax = plt.subplots(figsize=(5.5, 3.6), constrained_layout=True)
    ax.plot(curves["step"], curves["dsm_loss"])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("DSM loss per sample")
    return fig


def energy_distributions(md: xr.Dataset, samples: xr.Dataset, style: str = "ticks"):
    """Histograms of the potential energy (kJ/mol): MD, flow samples, and flow samples weighted by w."""
    sns.set_theme(style=style)
    md_energy = md["energy"].values
    temperature = float(samples.attrs["temperature_k"])
    flow_energy = samples["reduced_energy"].values * kt_kj_mol(temperature)
    log_w = samples["log_w"].values
    finite = np.isfinite(flow_energy) & np.isfinite(log_w)
    weights = np.exp(log_w[finite] - log_w[finite].max())
    lo, hi = np.quantile(md_energy, [0.001, 0.999])
    margin = 0.25 * (hi - lo)
    bins = np.linspace(lo - margin, hi + margin, 80)
    fig, ax = plt.subplots(figsize=(5.5, 3.6), constrained_layout=True)
    ax.hist(md_energy, bins=bins, density=True, histtype="step", lw=2, color="k", label="MD")
    ax.hist(flow_energy[finite], bins=bins, density=True, histtype="step", color="C1", label=label("flow_raw"))
    ax.hist(flow_energy[finite], bins=bins, weights=weights, density=True, histtype="step", color="C0",
            label=label("flow"))
    ax.set_xlabel("potential energy / kJ mol⁻¹")
    ax.set_ylabel("density")
    ax.set_title(f"{temperature:g} K, {int((~finite).sum())} non-finite samples left out")
    ax.legend(frameon=False)
    return fig


def training_curves(curves: xr.Dataset, style: str = "ticks"):
    """Left: training and validation NLL (and the reverse-KL term if used); right: ESS/N over training."""
    sns.set_theme(style=style)
    fig, (ax, ax_ess) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    ax.plot(curves["step"], curves["train_nll"], label="train NLL")
    ax.plot(curves["step"], curves["validation_nll"], label="validation NLL")
    if np.isfinite(curves["reverse_kl"].values).any():
        ax.plot(curves["step"], curves["reverse_kl"], label="reverse KL term")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("nats per sample")
    ax.legend(frameon=False)
    if "ess_fraction" in curves:
        ax_ess.plot(curves["step"], curves["ess_fraction"], marker="o", color="C3")
    ax_ess.set_yscale("log")
    ax_ess.set_xlabel("optimizer step")
    ax_ess.set_ylabel("ESS / N (monitor samples)")
    return fig


def save_figure(figure, path) -> None:
    """Save atomically (a half-written PNG never carries the final name) and free the figure."""
    from boltzflow.io import atomic_path

    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=150)
    plt.close(figure)
