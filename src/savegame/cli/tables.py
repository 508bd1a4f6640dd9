"""How the commands print: sizes, ages and numbers as text, and tables that fold long cells onto
more lines instead of cutting them, at any terminal width and without a terminal.

>>> human_size(1536), human_size(3 * 1024**3), _num(1.0)
('1.5 KB', '3.0 GB', '1.000')
"""

from __future__ import annotations

import time
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

TABLE_STYLE: dict[str, Any] = {"box": box.SIMPLE_HEAD, "collapse_padding": True, "pad_edge": False}
STATUS_STYLE = {"finished": "green", "stopped": "green", "running": "cyan", "preempted": "yellow",
                "failed": "red", "crashed": "red", "unreadable": "red"}


def human_size(size: float) -> str:
    if size < 1024:
        return f"{size:.0f} B"
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            break
    return f"{size:.1f} {unit}"


def human_age(when: float | None) -> str:
    if not when:
        return "?"
    seconds = max(0.0, time.time() - when)
    for limit, unit, div in ((60, "s", 1), (3600, "min", 60), (86400, "h", 3600), (7 * 86400, "days", 86400)):
        if seconds < limit:
            return "just now" if seconds < 5 else f"{seconds // div:.0f} {unit} ago"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(when))


def _num(value: Any) -> str:
    return f"{value:#.4g}" if isinstance(value, float) else str(value)  # 1.0 -> "1.000"


def metrics_text(metrics: dict[str, Any]) -> str:
    """``"acc=0.9000  loss=0.1000"``, sorted by name; ``"-"`` for none."""
    return "  ".join(f"{k}={_num(v)}" for k, v in sorted(metrics.items())) or "-"


def best_text(best: dict[str, Any] | None, *, step: bool = True) -> str:
    """``"loss/val=0.3000 @ step 3"`` for a best record (``runs.best_of``); ``"-"`` without a value."""
    if not best or best.get("value") is None:
        return "-"
    where = f" @ step {best['step']}" if step and best.get("step") is not None else ""
    return f"{best['metric']}={_num(best['value'])}{where}"


def table(title: str | None, *columns: str, right: tuple[str, ...] = (), **style: Any) -> Table:
    """A table whose cells fold onto more lines when the console is too narrow, never cut: every
    character of a long run path or metric name stays readable (rich's default is "…").
    Headers are plain text (a metric named ``acc[top1]`` is not rich markup)."""
    made = Table(title=None if title is None else escape(title), **{**TABLE_STYLE, **style})
    for name in columns:
        made.add_column(Text(name), justify="right" if name in right else "left", overflow="fold")
    return made


class Fitted:
    """A table laid out for the console it is printed on: its short columns (a status, a step, a
    size) stay whole while the long ones (run paths, metric names) fold, as long as each long
    column keeps room for its values (up to ``FOLD_AT`` characters of them); on a console too
    narrow even for that, every column folds evenly. No cell is ever cut."""

    FOLD_AT = 12

    def __init__(self, table: Table, short: tuple[str, ...]) -> None:
        self.table, self.short = table, short

    def _layout(self, console: Console, options: ConsoleOptions) -> None:
        def width(cell: Any, part: str) -> int:
            return getattr(Measurement.get(console, options, cell), part)

        short, long = [], []
        for column in self.table.columns:
            column.width = None
            cells = list(column.cells)
            if str(column.header) in self.short:  # as wide as its widest cell, header included
                short.append((column, max(width(c, "maximum") for c in [column.header, *cells])))
            else:  # the longest word of its values, at most FOLD_AT; the header folds
                long.append((column, min(self.FOLD_AT, max((width(c, "minimum") for c in cells), default=1))))
        for column, least in short + long:
            column.width = least
        unbounded = options.update_width(1 << 20)  # the width it needs, not the width it gets
        fits = Measurement.get(console, unbounded, self.table).maximum <= options.max_width
        for column, _ in long:
            column.width = None
        if not fits:
            for column, _ in short:
                column.width = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        self._layout(console, options)
        yield self.table

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        self._layout(console, options)
        return Measurement.get(console, options, self.table)


def checkpoint_table(rows: list[dict[str, Any]], title: str = "checkpoints") -> Fitted:
    """One row per checkpoint (``runs.checkpoint_rows``), one column per metric, marks for the
    best and the newest."""
    metrics = sorted({name for row in rows for name in row["metrics"]})
    columns = ("checkpoint", "step", "epoch", *metrics, "size", "created", "")
    made = table(title, *columns, right=("step", "epoch", *metrics, "size"))
    for row in rows:
        marks = " ".join(m for m, on in (("[bold green]best[/]", row["best"]),
                                         ("[cyan]newest[/]", row["newest"])) if on)
        values = [_num(row["metrics"][m]) if m in row["metrics"] else "-" for m in metrics]
        made.add_row(Text(row["name"]), str(row["step"]), str(row["epoch"]), *values,
                     human_size(row["size"]), human_age(row["created"]), marks)
    return Fitted(made, short=("checkpoint", "step", "epoch", "size"))
