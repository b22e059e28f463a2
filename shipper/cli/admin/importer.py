"""``shipper import FILE``: an existing system-log table (CSV or JSON lines) into Loki.

Rows become :class:`~shipper.event.LogEvent` objects with their original timestamps and go
through the one pipeline (``Pipeline.submit``), in chunks of ``--batch`` rows. After each chunk
the pipeline is flushed and a checkpoint file records how far the import got, so an interrupted
import (Ctrl-C, SIGTERM, Loki gone) resumes where it stopped when the same command runs again.
A re-sent row is byte-identical, which Loki stores once.

Loki refuses some entries with a 400 (too old, too new, too far behind newer entries of the
same stream) while storing the rest of the request. The pipeline keeps those entries as dead
letters, as it does for every source (in the service's spool directory: ``shipper spool
dead-letters push`` sends them again once the limit is lifted), and tells this module each
one it refused, with Loki's reason, to name the row. ``FILE.refused.jsonl`` is the view of
those refusals as rows: each refused row as it was read, with Loki's reason, ready to import
again; rows that never became an event (no readable time, broken JSON) are there too.

Column names default to the seed tables': Prisma ``Log`` (``id, level, type, actor, actorId,
message, metadata, createdAt``) and MySQL ``activity_logs`` (``id, level, type, actor,
actor_id, message, metadata, created_at``), found by the header; columns that map to no field
are kept in the event's metadata, and the row's ``id`` as ``metadata.import_id``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import shlex
import signal
import sys
import threading
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from shipper._units import NS, UnitError, format_time
from shipper.cli.admin import common
from shipper.cli.admin.output import progress
from shipper.cli.admin.tablefile import Source, TextEncoding, load_json, shown
from shipper.cli.formats import add_format_arg, resolve_format
from shipper.cli.help import Subparsers
from shipper.config import ShipperConfig
from shipper.delivery.pipeline import Pipeline
from shipper.delivery.spool.deadletters import DeadLetter, DeadLetters, dead_letter_dir
from shipper.event import DEFAULT_TYPE, OVERFLOW_TYPE, Entry, LogEvent, normalize_type
from shipper.typelabel import is_protected_type

__all__ = [
    "FIELDS",
    "PRESETS",
    "ColumnMap",
    "ImportOptions",
    "ImportSummary",
    "Source",
    "add_parser",
    "build_event",
    "parse_row_time",
    "resolve_columns",
    "run_import",
]

#: event field → the column names tried, in order, when the header is read (the seed names)
FIELDS: dict[str, tuple[str, ...]] = {
    "id": ("id",),
    "time": ("createdAt", "created_at", "timestamp", "time"),
    "level": ("level", "severity"),
    "type": ("type", "action", "event_type"),
    "actor": ("actor", "actor_type"),
    "actor_id": ("actorId", "actor_id", "userId", "user_id"),
    "message": ("message", "description"),
    "metadata": ("metadata", "meta", "details", "context"),
}
#: the seed tables' own column names
PRESETS: dict[str, dict[str, str]] = {
    "prisma": {"id": "id", "time": "createdAt", "level": "level", "type": "type",
               "actor": "actor", "actor_id": "actorId", "message": "message",
               "metadata": "metadata"},
    "activity_logs": {"id": "id", "time": "created_at", "level": "level", "type": "type",
                      "actor": "actor", "actor_id": "actor_id", "message": "message",
                      "metadata": "metadata"},
}
_INTERNAL = "_shipper_"
#: the import pipeline's queue bound: none of its own, the import's chunks are the bound
_UNBOUNDED = 1 << 62
CHECKPOINT_VERSION = 1


#: event field -> column name
ColumnMap = dict[str, str]


@dataclass(frozen=True)
class ImportOptions:
    path: Path
    service: str
    fmt: str  # csv | jsonl
    columns: ColumnMap  # field -> column (explicit flags and preset)
    timezone: dt.tzinfo = dt.UTC
    #: the file's text encoding (checked by :class:`TextEncoding`)
    encoding: str = "utf-8"
    batch: int = 500
    checkpoint: Path | None = None
    refused_path: Path | None = None
    restart: bool = False
    flush_timeout: float = 300.0
    show_progress: bool = True


@dataclass
class ImportSummary:
    rows_done: int = 0
    imported: int = 0
    refused: int = 0
    #: refused rows whose entries are kept as dead letters (in ``dead_letters``)
    dead_lettered: int = 0
    dead_letters: str | None = None
    #: short reason → (rows, one of Loki's messages)
    reasons: dict[str, list[Any]] = field(default_factory=dict)
    resumed_at: int = 0
    complete: bool = False
    stopped: str = ""
    #: the checkpoint said the import was complete already: nothing was done
    already: bool = False

    def add_refusal(self, reason: str, message: str) -> None:
        entry = self.reasons.setdefault(reason, [0, message])
        entry[0] += 1
        self.refused += 1

    def as_dict(self) -> dict[str, Any]:
        return {"rows_done": self.rows_done, "imported": self.imported,
                "refused": self.refused, "reasons": self.reasons,
                "dead_lettered": self.dead_lettered, "dead_letters": self.dead_letters,
                "resumed_at": self.resumed_at, "complete": self.complete,
                "stopped": self.stopped, "already_complete": self.already}


# ----------------------------------------------------------------------------- reading


def resolve_columns(header: Sequence[str], explicit: ColumnMap) -> ColumnMap:
    """field → column: explicit flags first, then the first seed name present in the header.
    The time column is required."""
    present = [h for h in header if not h.startswith(_INTERNAL)]
    columns: ColumnMap = {}
    for name, candidates in FIELDS.items():
        if name in explicit:
            if explicit[name] not in present:
                raise common.CommandError(
                    f"--{name.replace('_', '-')}-column {explicit[name]!r}: no such column "
                    f"(the file has: {_listed(present)})", common.EXIT_USAGE)
            columns[name] = explicit[name]
            continue
        found = next((c for c in candidates if c in present), None)
        if found is not None:
            columns[name] = found
    if "time" not in columns:
        raise common.CommandError(
            f"no time column: none of {', '.join(FIELDS['time'])} is in the file (it has: "
            f"{_listed(present)}); name it with --time-column", common.EXIT_USAGE)
    return columns


def _listed(names: Sequence[str], most: int = 20) -> str:
    if not names:
        return "no header"
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(shown(n) if len(n) > 40 else n for n in names[:most]) + more


_NAIVE = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d(:\d\d(\.\d+)?)?$")


def parse_row_time(value: Any, tz: dt.tzinfo = dt.UTC) -> int:
    """A row's time → ns: ISO 8601 / RFC 3339 (``2026-01-31T12:00:00.123Z``), MySQL DATETIME
    (``2026-01-31 12:00:00``, read in ``tz``), or a Unix time in s, ms, µs or ns. Anything
    else, and a time outside Loki's (1677-09-21 to 2262-04-11), is a ValueError."""
    if isinstance(value, bool) or value is None or value == "":
        raise ValueError("no time")
    try:
        ns = _row_time(value, tz)
        if ns.bit_length() >= 64:
            format_time(ns)  # refuses what is not nanoseconds in 64 bits
    except UnitError:
        raise ValueError(f"time out of range: {shown(value)} (Loki's times run from "
                         "1677-09-21 to 2262-04-11)") from None
    except (ValueError, OverflowError):
        raise ValueError(f"not a time: {shown(value)}") from None
    return ns


def _row_time(value: Any, tz: dt.tzinfo) -> int:
    if isinstance(value, (int, float)) or (isinstance(value, str)
                                           and re.fullmatch(r"\d+(\.\d+)?", value.strip())):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError("not a number")
        for limit, scale in ((1e11, NS), (1e14, 10**6), (1e17, 10**3)):
            if number < limit:
                return round(number * scale)
        return int(number)
    text = str(value).strip()
    fraction = 0
    m = re.search(r"\.(\d+)", text)
    if m:
        fraction = int((m.group(1) + "0" * 9)[:9])
        text = text[: m.start()] + text[m.end():]
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return int(parsed.timestamp()) * NS + fraction


def _metadata(value: Any) -> Any:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            return load_json(value)
        except ValueError:  # not JSON, or nested too deep: the text itself
            return value
    return value


def build_event(row: Mapping[str, Any], columns: ColumnMap, service: str, env: str | None,
                tz: dt.tzinfo, types: frozenset[str] | None = None) -> LogEvent:
    """One row → a LogEvent (raises ValueError for a row that cannot be one)."""
    def get(name: str) -> Any:
        column = columns.get(name)
        return row.get(column) if column is not None else None

    ts = parse_row_time(get("time"), tz)
    meta = _metadata(get("metadata"))
    if not isinstance(meta, dict):
        meta = {"value": meta}
    used = set(columns.values())
    for key, value in row.items():
        if key not in used and not key.startswith(_INTERNAL) and value not in (None, ""):
            meta.setdefault(key, value)
    if get("id") not in (None, ""):
        meta.setdefault("import_id", get("id"))
    raw_type = normalize_type(get("type"))
    admitted = raw_type
    if (types is not None and raw_type not in types and raw_type != DEFAULT_TYPE
            and not is_protected_type(raw_type)):
        # the type guard's rule, decided for the whole file: its most frequent types keep
        # their label, the rest become OTHER with the real type in metadata (never a type
        # an alert or retention rule selects on)
        admitted = OVERFLOW_TYPE
        meta.setdefault("type", raw_type)
    message = get("message")
    return LogEvent.create(
        service=service, env=env, level=get("level") or "INFO", actor=get("actor") or None,
        type=admitted, actor_id=get("actor_id"), message="" if message is None else message,
        metadata=meta, timestamp_ns=ts)


# ----------------------------------------------------------------------------- checkpoint


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        digest.update(fh.read(1 << 20))
    return digest.hexdigest()


def default_checkpoint(path: Path) -> Path:
    return path.with_name(path.name + ".shipper-import.json")


def default_refused(path: Path) -> Path:
    return path.with_name(path.name + ".refused.jsonl")


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- import


class _Refusals:
    """What the pipeline's worker reports: the entries Loki refused (as dead letters), and
    whether they were kept."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.letters: list[tuple[DeadLetter, bool]] = []

    def __call__(self, letters: Sequence[DeadLetter], kept: bool) -> None:
        with self.lock:
            self.letters += [(letter, kept) for letter in letters]

    def take(self) -> list[tuple[DeadLetter, bool]]:
        with self.lock:
            out, self.letters = self.letters, []
        return out


def _entry_key(entry: Entry) -> tuple[Any, ...]:
    labels = dict(entry.labels)
    return (labels.get("service_name"), labels.get("level"), labels.get("actor"),
            labels.get("type"), entry.timestamp_ns)


def _event_key(event: LogEvent) -> tuple[Any, ...]:
    return (event.service, event.level.value, event.actor.value, event.type, event.timestamp_ns)


def run_import(options: ImportOptions, config: ShipperConfig) -> ImportSummary:
    """Import ``options.path``, resuming from its checkpoint; the summary says what happened
    (``stopped`` is set when it stopped before the end)."""
    path = options.path
    if not path.is_file():
        raise common.CommandError(f"{path}: no such file", common.EXIT_USAGE)
    source = Source(path, options.fmt, TextEncoding(options.encoding))
    columns = resolve_columns(source.columns(), options.columns)
    checkpoint = options.checkpoint or default_checkpoint(path)
    refused_path = options.refused_path or default_refused(path)
    identity = {"version": CHECKPOINT_VERSION, "file": str(path.resolve()),
                "fingerprint": _fingerprint(path), "size": path.stat().st_size,
                "service": options.service,
                "env": config.env, "format": options.fmt, "columns": columns,
                "timezone": str(options.timezone), "encoding": source.encoding.codec}
    summary = ImportSummary()
    if checkpoint.exists() and not options.restart:
        try:
            state = json.loads(checkpoint.read_text(encoding="utf-8"))
            if not isinstance(state, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as exc:
            raise common.CommandError(f"{checkpoint} cannot be read ({exc}): pass --restart to "
                                      "import from the first row", common.EXIT_USAGE) from exc
        # the checkpoints of imports before --encoding existed read UTF-8
        if {k: state.get(k, "utf-8" if k == "encoding" else None) for k in identity} != identity:
            raise common.CommandError(
                f"{checkpoint} belongs to another import (a different or changed file, service, "
                "format, columns or encoding): pass --restart to start this one from the first "
                "row, or --checkpoint to keep both", common.EXIT_USAGE)
        summary = ImportSummary(rows_done=state["rows_done"], imported=state["imported"],
                                refused=state["refused"], reasons=state["reasons"],
                                dead_lettered=state.get("dead_lettered", 0),
                                resumed_at=state["rows_done"], complete=state["complete"])
        if summary.complete:
            summary.already = True
            return summary
    elif refused_path.exists():
        refused_path.unlink()

    with progress(f"read {path.name}", total=float(path.stat().st_size or 1),
                  enabled=options.show_progress, unit="bytes") as bar:
        index = _index(source, columns, options.timezone, config.type_limit, bar.update)
    outcomes = _Refusals()
    spool_dir = config.replace(service=options.service).resolved_spool_dir()
    dead = DeadLetters(dead_letter_dir(spool_dir), max_bytes=config.dead_letter_max_bytes) \
        if spool_dir is not None else None
    summary.dead_letters = str(dead.directory) if dead is not None else None
    pipeline_config = config.replace(
        service=options.service, spool=False, batch_max_events=options.batch,
        queue_max_bytes=_UNBOUNDED,  # the chunks below bound the memory; a huge row still goes
        queue_max_events=max(config.queue_max_events, options.batch * 2))
    pipeline = Pipeline(pipeline_config, start_replay=False, health=False, dead_letters=dead,
                        on_dead_letters=outcomes)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal) \
        if threading.current_thread() is threading.main_thread() else None
    refused_file = refused_path.open("a", encoding="utf-8")
    total = len(index.order)
    try:
        with progress(f"import {path.name}", total=float(total), enabled=options.show_progress,
                      unit="rows") as bar, path.open("rb") as fh:
            chunk: list[tuple[int, dict[str, Any], LogEvent]] = []
            chunk_bytes = 0  # of the file: a chunk is --batch rows or queue_max_bytes at most
            for position in range(summary.rows_done, total):
                if stop.is_set():
                    raise KeyboardInterrupt
                i = index.order[position]
                row_no = index.rows[i]
                record = source.read(fh, index.starts[i], index.ends[i], index.lines[i])
                row = record.row
                event = None
                if row is None:  # kept as read: the text, the bad bytes escaped
                    _refuse(summary, refused_file, row_no, {"_shipper_line": record.text},
                            record.kind, f"row {row_no}: {record.problem}")
                else:
                    try:
                        event = build_event(row, columns, options.service, config.env,
                                            options.timezone, index.types)
                    except ValueError as exc:
                        _refuse(summary, refused_file, row_no, row, "bad_row",
                                f"row {row_no}: {exc}")
                if event is not None and row is not None:
                    chunk.append((row_no, row, event))
                    chunk_bytes += index.ends[i] - index.starts[i]
                if (len(chunk) >= options.batch or chunk_bytes >= config.queue_max_bytes
                        or (chunk and position == total - 1)):
                    _ship(chunk, pipeline, outcomes, summary, refused_file, options)
                    chunk, chunk_bytes = [], 0
                if not chunk:  # everything up to here has its verdict
                    summary.rows_done = position + 1
                    _save(checkpoint, identity, summary)
                    bar.update(float(summary.rows_done))
            summary.complete = True
            summary.rows_done = total
            _save(checkpoint, identity, summary)
    except KeyboardInterrupt:
        summary.stopped = "interrupted"
        _save(checkpoint, identity, summary)
    except _Stopped as exc:
        summary.stopped = str(exc)
        _save(checkpoint, identity, summary)
    finally:
        refused_file.close()
        pipeline.close(5.0)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return summary


@dataclass
class _Index:
    """Every record's time, row number, first line and byte range, and the order to send them
    in: oldest first (Loki refuses an entry more than its out-of-order window behind the newest
    entry of its stream; a table exported newest first would lose all but its first hour)."""

    times: array[int] = field(default_factory=lambda: array("q"))
    rows: array[int] = field(default_factory=lambda: array("q"))
    lines: array[int] = field(default_factory=lambda: array("q"))
    starts: array[int] = field(default_factory=lambda: array("q"))
    ends: array[int] = field(default_factory=lambda: array("q"))
    order: list[int] = field(default_factory=list)
    types: frozenset[str] = frozenset()


def _index(source: Source, columns: ColumnMap, tz: dt.tzinfo, type_limit: int,
           report: Any) -> _Index:
    index = _Index()
    counts: Counter[str] = Counter()
    for row_no, line, start, end, (row, *_) in source.scan():
        ts = -1  # rows without a readable time go first, to be refused with the reason
        if row is not None:
            with contextlib.suppress(ValueError):
                ts = parse_row_time(row.get(columns["time"]), tz)
            counts[normalize_type(row.get(columns["type"]) if "type" in columns else None)] += 1
        index.times.append(ts)
        index.rows.append(row_no)
        index.lines.append(line)
        index.starts.append(start)
        index.ends.append(end)
        if row_no % 10_000 == 0:
            report(float(end))
    times, rows = index.times, index.rows
    index.order = sorted(range(len(times)), key=lambda i: (times[i], rows[i]))
    ranked = sorted((t for t in counts if t not in (DEFAULT_TYPE, OVERFLOW_TYPE)
                     and not is_protected_type(t)), key=lambda t: (-counts[t], t))
    index.types = frozenset(ranked[:type_limit])
    return index


class _Stopped(Exception):
    pass


def _save(checkpoint: Path, identity: Mapping[str, Any], summary: ImportSummary) -> None:
    _write_json(checkpoint, {**identity, **summary.as_dict()})


def _refuse(summary: ImportSummary, refused_file: IO[str], row_no: int, row: Mapping[str, Any],
            reason: str, message: str) -> None:
    summary.add_refusal(reason, message)
    record = {**row, "_shipper_row": row_no, "_shipper_reason": message}
    refused_file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")


def _ship(chunk: list[tuple[int, dict[str, Any], LogEvent]], pipeline: Pipeline,
          outcomes: _Refusals, summary: ImportSummary, refused_file: IO[str],
          options: ImportOptions) -> None:
    dropped_before = pipeline.stats()["dropped_total"]
    for _, _, event in chunk:
        pipeline.submit(event)
    delivered = pipeline.flush(options.flush_timeout)
    stats = pipeline.stats()
    if not delivered or stats["dropped_total"] > dropped_before:
        reasons = ", ".join(f"{k}: {v}" for k, v in stats["dropped"].items()) or "timed out"
        raise _Stopped(f"Loki did not take rows {chunk[0][0]}-{chunk[-1][0]} ({reasons})")
    by_key: dict[tuple[Any, ...], list[int]] = {}
    for i, (_, _, event) in enumerate(chunk):
        by_key.setdefault(_event_key(event), []).append(i)
    refused: dict[int, tuple[str, str, bool]] = {}
    for letter, kept in outcomes.take():
        entry = letter.entry
        candidates = by_key.get(_entry_key(entry), [])
        if len(candidates) > 1:
            same = [i for i in candidates if _line_message(entry) == chunk[i][2].message]
            candidates = same or candidates
        for i in candidates:
            refused.setdefault(i, (letter.reason, letter.message if letter.certain else
                                   f"{letter.message} (Loki named the stream, not the row)",
                                   kept))
    for i, (reason, reason_text, kept) in sorted(refused.items()):
        row_no, row, _ = chunk[i]
        _refuse(summary, refused_file, row_no, row, reason, reason_text)
        summary.dead_lettered += kept
    summary.imported += len(chunk) - len(refused)
    summary.rows_done = chunk[-1][0]
    refused_file.flush()


def _line_message(entry: Entry) -> Any:
    try:
        return json.loads(entry.line).get("message")
    except (ValueError, AttributeError):
        return None


# ----------------------------------------------------------------------------- command


def add_parser(sub: Subparsers) -> None:
    imp = common.new_parser(
        sub, "import", help="import an existing log table (CSV or JSON lines) into Loki",
        description="Import the rows of a system-log table exported as CSV or JSON lines "
        "(the seed apps' Prisma Log or MySQL activity_logs) as events of --service, keeping "
        "each row's own time. Columns are found by the seed names (createdAt/created_at, "
        "level, type, actor, actorId/actor_id, message, metadata, id); name others with the "
        "--*-column flags. Unmapped columns go into the metadata. The file is read as UTF-8 (or "
        "--encoding); a row that does not decode, or is not CSV or JSON, is refused with its "
        "line and byte offset, and the rows around it are imported. A progress bar shows on a "
        "terminal; at the end, a summary of imported and refused rows with Loki's reasons, "
        "and the refused rows in FILE.refused.jsonl (those Loki refused are also kept as dead "
        "letters in the service's spool: see 'shipper spool dead-letters'). Interrupted "
        "(Ctrl-C, SIGTERM, Loki gone)? "
        "Run the same command again: it resumes after the last chunk Loki took. Loki refuses "
        "entries older than reject_old_samples_max_age (1w by default): see the admin CLI "
        "docs to lift the limit for an import. Exit 0 all imported, 1 some refused or "
        "stopped, 2 bad options or file.",
        example_lines=(
            "shipper import logs.csv --service shop",
            "shipper import activity_logs.jsonl --service legacy-api --timezone Europe/Paris",
            "shipper import export.csv --service shop --type-column action --actor-id-column "
            "user_id",
            "shipper import legacy.txt --input-format csv --service shop --json",
            "shipper import mysql-dump.csv --service shop --encoding latin-1",
            "shipper import logs.csv.refused.jsonl --service shop   # after lifting the limit",
        ))
    imp.add_argument("file", metavar="FILE", help="a .csv, .jsonl or .ndjson file")
    imp.add_argument("--service", help="service_name of the imported events (default: "
                     "$SHIPPER_SERVICE)")
    imp.add_argument("--env", help="env label of the imported events (default: $SHIPPER_ENV); "
                     "e.g. --env imported keeps them in streams no live app writes to")
    imp.add_argument("--input-format", choices=("auto", "csv", "jsonl"), default="auto",
                     help="the file's format (default auto: from its suffix)")
    imp.add_argument("--preset", choices=tuple(PRESETS), help="the seed table's column names "
                     "(default: found from the header)")
    for name, candidates in FIELDS.items():
        flag = name.replace("_", "-")
        imp.add_argument(f"--{flag}-column", dest=f"col_{name}", metavar="COLUMN",
                         help=f"column holding {name} (tried by default: "
                         f"{', '.join(candidates)})")
    imp.add_argument("--encoding", default="utf-8", metavar="NAME",
                     help="the file's text encoding (default utf-8; a byte order mark is "
                     "skipped), e.g. latin-1 or cp1252; a row that does not decode is refused, "
                     "never read with U+FFFD")
    imp.add_argument("--timezone", default="UTC",
                     help="zone of times written without one, e.g. MySQL DATETIME (default UTC)")
    imp.add_argument("--batch", type=int, default=500, metavar="ROWS",
                     help="rows per request and per checkpoint (default 500)")
    imp.add_argument("--checkpoint", metavar="PATH",
                     help="progress file (default: FILE.shipper-import.json)")
    imp.add_argument("--refused", metavar="PATH",
                     help="where refused rows go (default: FILE.refused.jsonl)")
    imp.add_argument("--restart", action="store_true",
                     help="ignore the checkpoint and import from the first row")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_format_arg(imp, ("auto", "table", "json"),
                   auto_help="the summary as lines on a terminal, one JSON object when piped")
    common.add_connection_args(imp)
    imp.set_defaults(handler=common.run("import", _import))


def _timezone(name: str) -> dt.tzinfo:
    if name.upper() in ("UTC", "Z"):
        return dt.UTC
    m = re.fullmatch(r"([+-])(\d\d):?(\d\d)", name)
    if m:
        delta = dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
        return dt.timezone(-delta if m.group(1) == "-" else delta)
    try:
        from zoneinfo import ZoneInfo
        return ZoneInfo(name)
    except Exception:
        raise common.CommandError(f"--timezone {name!r}: not a time zone (UTC, +02:00, "
                                  "Europe/Paris)", common.EXIT_USAGE) from None


def _import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    fmt = args.input_format
    if fmt == "auto":
        fmt = "csv" if path.suffix.lower() == ".csv" else "jsonl" \
            if path.suffix.lower() in (".jsonl", ".ndjson", ".json") else ""
        if not fmt:
            raise common.CommandError(f"{path}: say --input-format csv or --input-format jsonl",
                                      common.EXIT_USAGE)
    if args.batch < 1:
        raise common.CommandError("--batch must be 1 or more", common.EXIT_USAGE)
    config = common.shipper_config(args, env=args.env)
    service = args.service or (config.service if os.environ.get("SHIPPER_SERVICE") or
                               config.service != "unknown_service" else None)
    if not service:
        raise common.CommandError("--service is required (or set SHIPPER_SERVICE): the "
                                  "imported events need the app's name", common.EXIT_USAGE)
    encoding = TextEncoding(args.encoding)
    explicit = dict(PRESETS[args.preset]) if args.preset else {}
    explicit.update({name: getattr(args, f"col_{name}") for name in FIELDS
                     if getattr(args, f"col_{name}")})
    if args.preset:  # a preset names columns; keep only those the file has, flags must exist
        header = Source(path, fmt, encoding).columns() if path.is_file() else []
        explicit = {k: v for k, v in explicit.items()
                    if v in header or getattr(args, f"col_{k}")}
    options = ImportOptions(
        path=path, service=service, fmt=fmt, columns=explicit,
        timezone=_timezone(args.timezone), encoding=args.encoding, batch=args.batch,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        refused_path=Path(args.refused) if args.refused else None, restart=args.restart,
        show_progress=not args.no_progress)
    # the pipeline's own closing line counts requests, not rows: the summary below says it
    internal = logging.getLogger("shipper.internal")
    level = internal.level
    internal.setLevel(logging.ERROR)
    try:
        summary = run_import(options, config)
    finally:
        internal.setLevel(level)
    as_json = resolve_format(args) == "json"
    refused_path = options.refused_path or default_refused(path)
    if as_json:
        print(json.dumps({**summary.as_dict(), "service": service,
                          "refused_file": str(refused_path) if summary.refused else None}))
    else:
        _print_summary(summary, service, refused_path)
    if summary.stopped:
        print(f"shipper import: stopped at row {summary.rows_done + 1}: {summary.stopped}; run "
              "the same command again to resume there", file=sys.stderr)
        return 130 if summary.stopped == "interrupted" else common.EXIT_FAILED
    return common.EXIT_FAILED if summary.refused else common.EXIT_OK


def _print_summary(summary: ImportSummary, service: str, refused_path: Path) -> None:
    total = summary.imported + summary.refused
    if summary.already:
        print(f"already imported (checkpoint complete at row {summary.rows_done}); --restart "
              "imports the file again")
        return
    if summary.resumed_at:
        print(f"resumed after row {summary.resumed_at}")
    print(f"imported {summary.imported} of {total} rows into service {service}; refused "
          f"{summary.refused}")
    for reason, (count, example) in sorted(summary.reasons.items(), key=lambda kv: -kv[1][0]):
        print(f"  {count} refused ({reason}): {example}")
    if summary.refused:
        print(f"refused rows, as read and with the reason: {refused_path}")
    if summary.dead_lettered and summary.dead_letters:
        spool = shlex.quote(str(Path(summary.dead_letters).parent))
        print(f"the {summary.dead_lettered} rows Loki refused are also kept as dead letters; "
              f"once the cause is fixed, send them again with: shipper spool dead-letters push "
              f"--dir {spool} (or import the refused file)")
    if "too_old" in summary.reasons or "too_far_behind" in summary.reasons:
        print("Loki refuses entries older than reject_old_samples_max_age (and, for a stream "
              "that has newer entries, older than its out-of-order window); see "
              "docs/admin-cli.md, 'Importing old logs', to lift the limits, then push the dead "
              "letters or import the refused file")
