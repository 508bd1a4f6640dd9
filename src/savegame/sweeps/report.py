"""The sweep section of ``savegame report SWEEPDIR``: the trials table, the objective against the
trial number, each parameter against the objective, and Optuna's parameter importances.

The importances are Optuna's (``optuna.importance.get_param_importances``, its default fANOVA
evaluator) over the COMPLETE trials; with fewer than two, or a parameter that never varied, the
section says why there are none rather than drawing a guess.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

from .study import SPEC_FILE, load_study, read_record
from .table import trial_rows

__all__ = ["is_sweep_dir", "sweep_section"]

COLOURS = {"COMPLETE": "#1f77b4", "PRUNED": "#ff7f0e", "FAIL": "#d62728", "RUNNING": "#7f7f7f", "WAITING": "#bbbbbb"}


def is_sweep_dir(path: Path) -> bool:
    return (Path(path) / SPEC_FILE).is_file()


def sweep_section(sweep_dir: Path, *, storage: str | None = None) -> str:
    """The section's HTML (its figures inline as PNG)."""
    study = load_study(sweep_dir, storage=storage)
    rows = trial_rows(study, sweep_dir)
    metric = read_record(sweep_dir).get("spec", {}).get("objective", {}).get("metric", "objective")
    e = html.escape
    out = [f'<section id="sweep"><h2>sweep {e(study.study_name)}</h2>',
           f"<p class=sub>{len(rows)} trial(s), objective {e(metric)} ({study.direction.name.lower()}), "
           f"best first</p>", _rows_table(rows)]
    out.append(f'<p><img alt="the objective of each trial, and each parameter against it" '
               f'src="data:image/png;base64,{_png(_figure(rows, metric))}"></p>')
    importances, why = _importances(study)
    if importances:
        out.append(f'<h3>Parameter importances (Optuna, fANOVA)</h3><p><img alt="parameter importances" '
                   f'src="data:image/png;base64,{_png(_importance_figure(importances))}"></p>')
    else:
        out.append(f"<p class=sub>No parameter importances: {e(why)}</p>")
    out.append("</section>")
    return "\n".join(out)


def _rows_table(rows: list[dict[str, Any]]) -> str:
    e = html.escape
    head = ["trial", "state", "value", "params", "step", "resumes", "why it ended so"]
    out = ["<div class=scroll><table><tr>", *(f"<th>{h}</th>" for h in head), "</tr>"]
    for row in rows:
        value = "-" if row["value"] is None else f"{row['value']:.6g}"
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(row["params"].items()))
        cells = [str(row["number"]), row["state"], value, params, "-" if row["step"] is None else f"{row['step']:,}",
                 str(row["resumes"]), row["reason"] or ""]
        out.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    out.append("</table></div>")
    return "".join(out)


def _figure(rows: list[dict[str, Any]], metric: str) -> Any:
    from matplotlib.figure import Figure

    params = sorted({k for row in rows for k in row["params"]})
    fig = Figure(figsize=(4.2 * (1 + len(params)), 3.2))
    axes = fig.subplots(1, 1 + len(params), squeeze=False)[0]
    valued = [r for r in rows if r["value"] is not None and math.isfinite(r["value"])]
    for state, colour in COLOURS.items():
        group = [r for r in valued if r["state"] == state]
        if group:
            axes[0].scatter([r["number"] for r in group], [r["value"] for r in group], c=colour, label=state.lower(), s=28)
    axes[0].set(xlabel="trial", ylabel=metric, title="objective by trial")
    if valued:
        axes[0].legend(fontsize=8)
    for ax, name in zip(axes[1:], params):
        points = [(r["params"][name], r["value"], r["state"]) for r in valued if name in r["params"]]
        numeric = all(isinstance(p, (int, float)) and not isinstance(p, bool) for p, _, _ in points)
        labels = sorted({str(p) for p, _, _ in points})
        for p, v, state in points:
            ax.scatter(p if numeric else labels.index(str(p)), v, c=COLOURS.get(state, "#000"), s=28)
        if not numeric:
            ax.set_xticks(range(len(labels)), labels)
        elif points and min(p for p, _, _ in points) > 0 and max(p for p, _, _ in points) / min(p for p, _, _ in points) > 50:
            ax.set_xscale("log")
        ax.set(xlabel=name, ylabel=metric, title=f"{name} against the objective")
    fig.tight_layout()
    return fig


def _importances(study: Any) -> tuple[dict[str, float], str]:
    import warnings

    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2:
        return {}, f"they need at least 2 completed trials, and this sweep has {len(complete)}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study)), ""
    except (RuntimeError, ValueError) as error:  # e.g. a parameter with a single value
        return {}, f"Optuna could not compute them ({error})"


def _importance_figure(importances: dict[str, float]) -> Any:
    from matplotlib.figure import Figure

    names = list(importances)[::-1]
    fig = Figure(figsize=(5.5, 0.5 + 0.45 * len(names)))
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color="#1f77b4")
    ax.set(xlabel="importance (share of the objective's variance)", xlim=(0, 1))
    fig.tight_layout()
    return fig


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
