"""The doctor's report as ONE static HTML file: a comparison table, then a section per run.

Everything the page needs is inside it (inline CSS, figures as base64 PNG ``data:`` URLs, no
script), so it can be mailed, attached to a CI job or opened offline years later; there is no URL
of any kind in it. Every string from a run (names, tags, hparams, messages) is escaped.

The comparison table has a column only for the hyperparameters that differ between the runs
(a script's every flag would make it scroll sideways); all of them are one click away, in a
``<details>`` below it (no script needed to open it). A run's checkpoint table lists the kept
checkpoints, with a count of those the keep policy deleted; "best" is always the run's best
checkpoint, the one ``savegame export RUN --best`` writes, and a curve's minimum is "lowest".

>>> import tempfile, numpy as np
>>> from pathlib import Path
>>> from savegame.doctor.curves import RunData, Series
>>> from savegame.doctor.diagnosis import Diagnosis
>>> run = RunData("a<b", path=Path("a"), scalars={"loss": Series(np.arange(1, 50), 1 / np.arange(1, 50))})
>>> page = write_report([run], [Diagnosis("a<b", verdict="healthy", confidence=0.9, tags={"train_loss": "loss"})],
...                     Path(tempfile.mkdtemp()) / "report.html").read_text()
>>> "a&lt;b" in page and "a<b" not in page, "http" in page
(True, False)
"""

from __future__ import annotations

import base64
import io
import math
import os
import time
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from ..atomic import replace_file
from .diagnosis import Diagnosis
from .plot import best_of, require_matplotlib
from .verdicts import badge_colour

if TYPE_CHECKING:
    from .curves import RunData, Series

__all__ = ["write_report", "render_report"]

FIGURE_DPI = 90

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1180px;
 padding:16px 24px;color:#1b1b1b;background:#fff}
h1{font-size:22px;margin:8px 0 2px} h2{font-size:18px;margin:0 0 8px} h3{font-size:14px;margin:14px 0 4px}
.sub{color:#666;font-size:12px} section{border-top:2px solid #e0e0e0;margin-top:28px;padding-top:14px}
table{border-collapse:collapse;font-size:13px;margin:6px 0} th,td{border:1px solid #ddd;padding:3px 8px;
 text-align:left;vertical-align:top} th{background:#f4f4f4} td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;color:#fff;border-radius:4px;padding:1px 8px;font-weight:600;font-size:13px}
.scroll{overflow-x:auto} img{max-width:100%;height:auto;border:1px solid #eee}
ul{margin:4px 0;padding-left:22px} code{background:#f4f4f4;padding:0 3px;border-radius:3px}
.muted{color:#777} .best{font-weight:600;color:#2e7d32}
details{margin:4px 0} summary{cursor:pointer;color:#444;font-size:13px} tr.diff td:first-child{font-weight:600}
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        return _e(value)
    value = float(value)
    if not math.isfinite(value):
        return _e(value)
    # whole numbers with separators (steps, sizes) up to a trillion; anything beyond reads better as 1.1e+36
    return f"{value:,.0f}" if value.is_integer() and 1000 <= abs(value) < 1e12 else f"{value:.4g}"


def _last_finite(series: Series | None) -> float | None:
    if series is None:
        return None
    ok = np.isfinite(series.values)
    return float(series.values[ok][-1]) if ok.any() else None


def _extreme(series: Series | None, mode: str) -> tuple[float, int] | None:
    if series is None or not np.isfinite(series.values).any():
        return None
    values = np.where(np.isfinite(series.values), series.values, np.inf if mode == "min" else -np.inf)
    i = int(np.argmin(values) if mode == "min" else np.argmax(values))
    return float(values[i]), int(series.steps[i])


def _role(run: RunData, diagnosis: Diagnosis, role: str) -> Series | None:
    tag = diagnosis.tags.get(role)
    return run.scalars.get(tag) if tag else None


def _anchor(index: int) -> str:
    return f"run-{index}"  # run names hold / and spaces; an index makes a clean #fragment


def _verdict(diagnosis: Diagnosis) -> str:
    colour = badge_colour(diagnosis)  # the verdict table's (verdicts.py), a user's verdict's included
    text = _e(diagnosis.verdict) if diagnosis.judged else "cannot judge"
    return f'<span class="badge" style="background:{colour}">{text}</span>'


def _badge(diagnosis: Diagnosis) -> str:
    if not diagnosis.judged:
        return _verdict(diagnosis)
    return f'{_verdict(diagnosis)} <span class="sub">{diagnosis.confidence:.0%} confidence</span>'



def _figure_png(run: RunData, diagnosis: Diagnosis, checkpoints: Any) -> str:
    """The run's figure as base64 PNG (matplotlib was checked for by :func:`write_report`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from .plot import run_figure

    fig = run_figure(run, diagnosis, checkpoints=checkpoints)
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[bool] = (),
           row_class: Sequence[str] = ()) -> str:
    """Cells arrive as HTML already escaped; headers are escaped here."""
    out = ["<div class=scroll><table><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr>"]
    for r, row in enumerate(rows):
        css = f" class={row_class[r]}" if r < len(row_class) and row_class[r] else ""
        out.append(f"<tr{css}>" + "".join(
            f'<td{" class=n" if i < len(numeric) and numeric[i] else ""}>{cell}</td>' for i, cell in enumerate(row))
            + "</tr>")
    out.append("</table></div>")
    return "".join(out)


_MISSING = object()


def _differing(runs: Sequence[RunData]) -> tuple[list[Any], list[Any]]:
    """(every hparam name, the names whose value is not the same in every run), sorted; a name
    missing from some run differs. One run: none differ."""
    keys = sorted({k for run in runs for k in run.hparams}, key=str)
    differ = [k for k in keys if len({repr(run.hparams.get(k, _MISSING)) for run in runs}) > 1]
    return keys, differ


def _all_hparams(runs: Sequence[RunData], keys: Sequence[Any], differ: Sequence[Any]) -> str:
    """Every hparam of every run, folded in a ``<details>``: a row per name, a column per run."""
    if not keys:
        return ""
    same = len(keys) - len(differ)
    note = f" ({same} are the same in every run)" if len(runs) > 1 and same else ""
    rows = [[_e(k), *(_num(run.hparams[k]) if k in run.hparams else "—" for run in runs)] for k in keys]
    table = _table(["hyperparameter", *(run.name for run in runs)], rows, [False] + [True] * len(runs),
                   ["diff" if k in differ else "" for k in keys])
    return f"<details><summary>all {len(keys)} hyperparameters{note}</summary>{table}</details>"


def _comparison(runs: Sequence[RunData], diagnoses: Sequence[Diagnosis], kept: Sequence[Sequence[Any]]) -> str:
    all_keys, keys = _differing(runs)
    bests = [best_of(run, d, [int(c.step) for c in ks]) for run, d, ks in zip(runs, diagnoses, kept)]
    with_acc = any(_role(r, d, "val_acc") is not None for r, d in zip(runs, diagnoses))
    with_best = any(b is not None for b in bests)
    head = ["run", "verdict", "confidence", *keys, "final train loss", "final val loss", "lowest val loss @ step"]
    head += ["best checkpoint"] if with_best else []
    head += ["final val acc", "highest val acc @ step"] if with_acc else []
    rows = []
    for i, (run, d, best) in enumerate(zip(runs, diagnoses, bests)):
        val = _role(run, d, "val_loss")
        low = _extreme(val, "min")  # the logged value (what a checkpoint's metric holds), not a smoothed one
        row = [f'<a href="#{_anchor(i)}">{_e(run.name)}</a>',
               _verdict(d) if d.judged else f"cannot judge: {_e(d.cannot_judge)}",
               f"{d.confidence:.0%}" if d.judged else "—",
               *(_num(run.hparams.get(k)) if k in run.hparams else "—" for k in keys),
               _num(_last_finite(_role(run, d, "train_loss"))), _num(_last_finite(val)),
               f"{_num(low[0])} @ {low[1]:,}" if low else "—"]
        if with_best:
            row.append(_best_cell(best))
        if with_acc:
            acc = _role(run, d, "val_acc")
            top = _extreme(acc, "max")
            row += [_num(_last_finite(acc)), f"{_num(top[0])} @ {top[1]:,}" if top else "—"]
        rows.append(row)
    numeric = [False, False, True] + [True] * len(keys) + [True] * (len(head) - 3 - len(keys))
    return _table(head, rows, numeric) + _all_hparams(runs, all_keys, keys)


def _best_cell(best: dict[str, Any] | None) -> str:
    if best is None:
        return "—"
    return f"step {best['step']:,}: {_e(best.get('metric'))} = {_num(best.get('value'))}"


def _listing(title: str, items: Sequence[str]) -> str:
    if not items:
        return ""
    return f"<h3>{_e(title)}</h3><ul>" + "".join(f"<li>{_e(x)}</li>" for x in items) + "</ul>"


def _checkpoints(run: RunData, d: Diagnosis, checkpoints: Sequence[Any]) -> str:
    """The kept checkpoints (the best one starred), then how many more the keep policy deleted."""
    info = run.info or {}
    kept = {int(c.step): c for c in checkpoints}
    deleted = len(set(int(s) for s in info.get("saved_steps") or []) - set(kept))
    if not kept and not deleted:
        return "<h3>Checkpoints</h3><p class=muted>none written</p>"
    best = best_of(run, d, list(kept))
    rows = []
    for step, c in sorted(kept.items()):
        metrics = ", ".join(f"{_e(k)}={_num(v)}" for k, v in sorted(c.metrics.items())) or "—"
        state = "kept"
        if best is not None and step == best["step"]:
            state += ' <span class=best>★ best</span>'
        rows.append([f"{step:,}", metrics, state])
    out = "<h3>Checkpoints</h3>" + (_table(["step", "metrics", "state"], rows, [True]) if rows else
                                    "<p>none kept</p>")
    if deleted:
        out += (f"<p class=muted>{deleted:,} more {'was' if deleted == 1 else 'were'} saved and deleted by the "
                "keep policy</p>")
    if best is not None:
        out += (f"<p>best checkpoint (what <code>savegame export RUN --best</code> writes): "
                f"{_best_cell(best)}</p>")
    return out


def _status(info: dict[str, Any]) -> str:
    parts = [f"<b>{_e(info.get('status', 'unknown'))}</b>"]
    if info.get("message"):
        parts.append(_e(info["message"]))
    if info.get("resumes"):
        parts.append(f"resumed {len(info['resumes'])} time(s)")
    return "<h3>run.json</h3><p>status: " + " · ".join(parts) + "</p>"


def _kept(run: RunData) -> list[Any]:
    """The kept checkpoints of a savegame run (``CheckpointInfo``), [] for any other."""
    if run.info is None or run.path is None:
        return []
    from ..checkpoint.layout import list_checkpoints

    return list_checkpoints(Path(run.path) / "checkpoints")


def _section(index: int, run: RunData, d: Diagnosis, checkpoints: Sequence[Any]) -> str:
    out = [f'<section id="{_anchor(index)}"><h2>{_e(run.name)}</h2><p>{_badge(d)}</p>']
    if not d.judged:
        out.append(f"<p><b>cannot judge:</b> {_e(d.cannot_judge)}</p>")
    if d.suggestions:
        out.append(f'<p class="fix"><b>fix:</b> {_e(d.suggestions[0])}</p>')
    if d.decided_by:
        out.append(f'<p class="numbers"><b>decided by:</b> {_e(d.numbers())}</p>')
    out.append(_listing("Evidence", d.evidence))
    out.append(_listing("Suggestions", d.suggestions))
    out.append(_listing("Other findings", [f.message for f in d.findings]))  # messages name their steps
    out.append(_listing("Reading notes", [n.message for n in run.notes]))
    if run.scalars:
        out.append(f'<img alt="{_e("curves of " + run.name)}" '
                   f'src="data:image/png;base64,{_figure_png(run, d, checkpoints)}">')
    else:
        out.append("<p class=muted>no scalar curves in this run</p>")
    if run.hparams:
        out.append(f"<h3>Hyperparameters</h3><details><summary>{len(run.hparams)} hyperparameters</summary>" + _table(
            ["name", "value"], [[_e(k), _num(v)] for k, v in sorted(run.hparams.items(), key=lambda kv: str(kv[0]))])
            + "</details>")
    if run.info is not None:
        out.append(_checkpoints(run, d, checkpoints))
        out.append(_status(run.info))
    out.append("</section>")
    return "".join(out)


def render_report(runs: Sequence[RunData], diagnoses: Sequence[Diagnosis], *, title: str = "savegame report",
                  sections: Sequence[str] = ()) -> str:
    """The report's HTML text (see :func:`write_report`); ``sections`` (HTML, e.g. a sweep's) go
    after the comparison, before the runs."""
    if len(runs) != len(diagnoses):
        raise ValueError(f"write_report needs one diagnosis per run, but got {len(runs)} runs and "
                         f"{len(diagnoses)} diagnoses; pass diagnose(run) for each run, in the same order.")
    made = time.strftime("%Y-%m-%d %H:%M:%S")
    parts = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1><p class=sub>{len(runs)} run(s) · written {made} by savegame doctor</p>"]
    kept = [_kept(run) for run in runs]
    if runs:
        parts.append("<h3>Comparison</h3>" + _comparison(runs, diagnoses, kept))
    else:
        parts.append("<p>No runs were found.</p>")
    parts += list(sections)
    parts += [_section(i, run, d, ks) for i, (run, d, ks) in enumerate(zip(runs, diagnoses, kept))]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(runs: Sequence[RunData], diagnoses: Sequence[Diagnosis], path: str | os.PathLike, *,
                 title: str = "savegame report", sections: Sequence[str] = ()) -> Path:
    """Write the self-contained HTML report of ``runs`` (one diagnosis each, same order) to
    ``path``, creating its folder; returns the path. Needs matplotlib for the figures: without it,
    :class:`~savegame.errors.MissingDependencyError` says what to install, before any work."""
    if any(run.scalars for run in runs):
        require_matplotlib("savegame's HTML report")
    text = render_report(runs, diagnoses, title=title, sections=sections)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, text)  # a reader (a browser refreshing) never sees half a page
    return path
