"""How the admin commands print: tables and progress bars on a terminal (with ``rich`` when it
is installed, plain aligned text otherwise), JSON, JSON lines or CSV (which one:
:mod:`shipper.cli.formats`). Every CSV cell is written through
:func:`~shipper.cli.admin.formulas.neutralise`, so no logged text runs in a spreadsheet.

Nothing here talks to Loki; the commands hand it rows (dicts) and it writes them.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO, Any, Protocol

from shipper.cli.admin.formulas import neutralise
from shipper.cli.formats import Format, is_terminal

__all__ = [
    "Progress",
    "event_line",
    "json_default",
    "progress",
    "render_table",
    "terminal_width",
    "write_rows",
]


def _rich_available() -> bool:
    if os.environ.get("SHIPPER_NO_RICH"):
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def json_default(value: Any) -> Any:
    return str(value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return "" if not value else json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                                               default=json_default)
    return " ".join(str(value).split()) if isinstance(value, str) else str(value)


def render_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                 stream: IO[str] | None = None, *, title: str | None = None) -> None:
    """A table of ``columns``; rich on a terminal when available, aligned plain text else."""
    out = stream or sys.stdout
    if is_terminal(out) and _rich_available():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, show_lines=False, header_style="bold")
        for name in columns:
            wide = name in ("message", "metadata", "query")
            table.add_column(name, overflow="fold" if wide else "ellipsis",
                             no_wrap=not wide, ratio=3 if wide else None)
        for row in rows:
            table.add_row(*(_cell(row.get(c)) for c in columns))
        Console(file=out).print(table)
        return
    width = shutil.get_terminal_size((160, 24)).columns if is_terminal(out) else 0
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    sizes = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    if title:
        out.write(title + "\n")
    lines = [columns, *cells]
    for line in lines:
        text = "  ".join(v.ljust(sizes[i]) if i < len(columns) - 1 else v
                         for i, v in enumerate(line))
        if width and len(text) > width:
            text = text[: width - 1] + "…"
        out.write(text.rstrip() + "\n")


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def event_line(row: Mapping[str, Any], width: int | None, *, service: bool = False,
               widths: Mapping[str, int] | None = None) -> str:
    """One event on one line: time, (service,) level, actor, type, actor id, message, then
    the metadata as compact JSON, shortened so the line fits ``width`` (None: never cut).
    ``widths`` pads the short columns so lines of one page align."""
    pad = widths or {}
    names = (("service",) if service else ()) + ("level", "actor", "type")
    parts = [str(row.get("time") or "")]
    parts += [_cell(row.get(n)).ljust(pad.get(n, 0)) for n in names]
    if row.get("actor_id"):
        parts.append(f"actor_id={_cell(row.get('actor_id'))}")
    parts.append(_cell(row.get("message")))
    line = "  ".join(p for p in parts if p.strip() or p)
    meta = _cell(row.get("metadata"))
    if meta:
        room = None if width is None else width - len(line) - 2
        if room is None:
            line += "  " + meta
        elif room >= 8:
            line += "  " + _fit(meta, room)
    return line if width is None else _fit(line, width)


def terminal_width(out: IO[str]) -> int | None:
    """The width to fit lines to: the terminal's (``$COLUMNS`` wins), None when piped."""
    return shutil.get_terminal_size((160, 24)).columns if is_terminal(out) else None


def write_rows(rows: Iterable[Mapping[str, Any]], fmt: Format, out: IO[str],
               columns: Sequence[str]) -> int:
    """Stream rows as a JSON array, JSON lines or CSV (``metadata`` as JSON text in CSV, every
    cell neutralised as :mod:`~shipper.cli.admin.formulas` says); returns how many were
    written."""
    n = 0
    if fmt == "json":
        out.write("[")
        for row in rows:
            out.write(("\n" if n == 0 else ",\n") + json.dumps(
                dict(row), ensure_ascii=False, default=json_default))
            n += 1
        out.write("\n]\n" if n else "]\n")
    elif fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(dict(row), ensure_ascii=False, default=json_default) + "\n")
            n += 1
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_cell(row.get(c)) for c in columns])
            n += 1
    else:
        buffered = list(rows)
        render_table(buffered, columns, out)
        n = len(buffered)
    return n


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=json_default)
    else:
        text = str(value)
    return neutralise(text)


class Progress(Protocol):
    def update(self, completed: float, *, total: float | None = None) -> None: ...


class _NoProgress:
    def update(self, completed: float, *, total: float | None = None) -> None:
        pass


class _RichProgress:
    def __init__(self, bar: Any, task: Any) -> None:
        self._bar, self._task = bar, task

    def update(self, completed: float, *, total: float | None = None) -> None:
        self._bar.update(self._task, completed=completed, total=total)


@contextmanager
def progress(description: str, total: float | None, *, enabled: bool = True,
             unit: str = "") -> Iterator[Progress]:
    """A progress bar on stderr when it is a terminal and rich is installed; else nothing."""
    if not (enabled and is_terminal(sys.stderr) and _rich_available()):
        yield _NoProgress()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn()]
    if unit:
        columns.append(MofNCompleteColumn())
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    with RichProgress(*columns, transient=False, console=_stderr_console()) as bar:
        task = bar.add_task(description, total=total)
        yield _RichProgress(bar, task)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(file=sys.stderr)
