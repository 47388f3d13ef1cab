"""The summary as an HTML table for the Snakemake report: one row per (estimator, state), unreliable rows
greyed and struck through, with the reason the summary gives, and the reference's ΔF beside every row."""

from __future__ import annotations

from html import escape

import numpy as np
import xarray as xr

from boltzflow.estimator_table import REFERENCE, label
from boltzflow.plots import QUADRATURE, ordered_estimators

#: (variable, column header, format) of the per-estimator or per-(estimator, state) columns, when present.
COLUMNS = [
    ("ess_fraction", "ESS/N", "{:.3g}"),
    ("pareto_k", "Pareto k̂", "{:.2f}"),
    ("n_eff_state", "effective samples in state", "{:.3g}"),
    ("n_samples", "samples", "{:.0f}"),
    ("kl_divergence", "KL (nats)", "{:.3g}"),
    ("acceptance_rate", "acceptance", "{:.2f}"),
    ("cpu_seconds", "CPU s", "{:.3g}"),
]

STYLE = """<style>
table.summary {border-collapse: collapse; font: 13px sans-serif}
table.summary th, table.summary td {padding: 2px 8px; border-bottom: 1px solid #ddd; text-align: right}
table.summary td.name {text-align: left}
table.summary tr.unreliable td {color: #888; background: repeating-linear-gradient(45deg, #fff, #fff 6px, #f0f0f0 6px, #f0f0f0 12px)}
table.summary tr.unreliable td.value {text-decoration: line-through}
</style>"""


def _number(value, fmt: str) -> str:
    value = float(value)
    return fmt.format(value) if np.isfinite(value) else "–"


def _with_error(value, error) -> str:
    value, error = float(value), float(error)
    if not np.isfinite(value):
        return "–"
    return f"{value:.2f} ± {error:.2f}" if np.isfinite(error) else f"{value:.2f}"


def summary_html(summary: xr.Dataset, system: str) -> str:
    """A self-contained HTML page of the summary (``reliable`` and ``unreliable_reason`` mark the rows)."""
    reference = QUADRATURE if QUADRATURE in summary["estimator"].values else REFERENCE.name
    columns = [column for column in COLUMNS if column[0] in summary]
    header = ["estimator", "state", "ΔF / kT", f"ΔF {escape(label(reference))} / kT",
              *(escape(title) for _, title, _ in columns), "reliable", "why not"]
    rows = []
    for name in ordered_estimators(summary["estimator"].values):
        row = summary.sel(estimator=name)
        for state in summary["state"].values:
            cell = row.sel(state=state)
            ok = bool(cell["reliable"].values.astype(bool))
            values = [escape(label(name)), escape(str(state)),
                      _with_error(cell["delta_f"], cell["delta_f_err"]),
                      _with_error(summary["delta_f"].sel(estimator=reference, state=state),
                                  summary["delta_f_err"].sel(estimator=reference, state=state))]
            values += [_number(cell[variable], fmt) for variable, _, fmt in columns]
            reason = str(cell["unreliable_reason"].values) if "unreliable_reason" in cell else ""
            values += ["yes" if ok else "no", escape(reason)]
            classes = ["name", "name", "value", *["" for _ in values[3:]]]
            cells = "".join(f'<td class="{c}">{v}</td>' if c else f"<td>{v}</td>" for c, v in zip(classes, values))
            rows.append(f'<tr class="{"reliable" if ok else "unreliable"}">{cells}</tr>')
    head = "".join(f"<th>{h}</th>" for h in header)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>summary of {escape(system)}</title>{STYLE}"
            f"</head><body>\n<h3>Summary of {escape(system)}</h3>\n<table class=\"summary\"><thead><tr>{head}</tr></thead>"
            f"<tbody>\n" + "\n".join(rows) + "\n</tbody></table>\n</body></html>\n")
