"""The least CPU a Python shipper spends per JSON line, stage by stage, for comparison with
what the sidecar spends (``bench/profile_worker.py --sidecar``) and with Promtail's CPU per line
(``bench/sidecar.py --promtail``).

    python bench/line_floor.py [--lines N]

On the benchmark's own lines (bench/sidecar.py writes them) in one thread, with no queue, no
other thread, no checks and no network, it adds one stage at a time: read, decode and split;
msgspec's parse; the labels and an event object of five slots; the entry's JSON line
(orjson); streams grouped and the push body encoded (orjson). It leaves out what the sidecar
does beyond that: the redaction check, the type guard, the checks of each field's kind, the
full event contract, metrics and the threads between the stages. Each figure is process CPU
per line, freeing what the stage made included, the best of three passes.

Then the sidecar's own stages on the same lines, one after the other in this one thread (no
queue, no thread switches): the file source's parse into events (``LineParser.parse_many``),
the worker's redaction check (``Redactor.clean_events``), its entries (``make_entries``), the
push bodies (``encode_json``, in batches of 1 MiB) and freeing the events. Their sum, set
against ``bench/profile_worker.py --sidecar`` (the same stages on their threads), shows what
the threads cost.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson

from shipper.config import ShipperConfig
from shipper.delivery.push import encode_json
from shipper.event import make_entries
from shipper.redact import CLEAN_GROUP, Redactor
from shipper.sidecar.formats import LineParser
from shipper.sidecar.workers import tune_process
from shipper.typelabel import TypeGuard

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sidecar import write_lines  # the benchmark's own lines

_LEVELS = {10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARNING", 50: "ERROR", 60: "CRITICAL"}
_STAGES = ("read, decode, split", "+ msgspec parse", "+ labels, an event object",
           "+ the JSON line", "+ streams grouped, push body")


class _Event:
    __slots__ = ("actor_id", "labels", "message", "meta", "ts")

    def __init__(self, labels: tuple[tuple[str, str], ...], ts: int, message: str,
                 meta: dict[str, Any], actor_id: str) -> None:
        self.labels, self.ts, self.message, self.meta, self.actor_id = (
            labels, ts, message, meta, actor_id)


def _run(path: Path, stages: int) -> tuple[int, float]:
    """Lines read and CPU seconds, doing the first ``stages`` stages after the read."""
    decode = msgspec.json.Decoder().decode
    labels_of: dict[tuple[Any, ...], tuple[tuple[str, str], ...]] = {}
    lines = 0
    started = time.process_time()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            cut = block.rfind(b"\n") + 1
            f.seek(cut - len(block), 1)
            texts = block[:cut].decode().splitlines()
            lines += len(texts)
            if stages < 1:
                continue
            objects = [decode(text) for text in texts]
            if stages < 2:
                continue
            events = []
            for obj in objects:
                key = (obj.pop("level"), obj.pop("actor"), obj.pop("type"))
                labels = labels_of.get(key)
                if labels is None:
                    labels = labels_of[key] = (("service_name", "bench"),
                                               ("level", _LEVELS[key[0]]),
                                               ("actor", key[1]), ("type", key[2]))
                events.append(_Event(labels, obj.pop("time") * 1_000_000, obj.pop("msg"), obj,
                                     obj.pop("actorId")))
            if stages < 3:
                continue
            entries = [(e.labels, e.ts,
                        orjson.dumps({"message": e.message, "metadata": e.meta}).decode(),
                        (("actor_id", e.actor_id),)) for e in events]
            if stages < 4:
                continue
            for start in range(0, len(entries), 4000):
                streams: dict[tuple[tuple[str, str], ...], list[tuple[str, str, Any]]] = {}
                for labels, ts, line, metadata in entries[start:start + 4000]:
                    streams.setdefault(labels, []).append((str(ts), line, dict(metadata)))
                orjson.dumps({"streams": [{"stream": dict(labels), "values": values}
                                          for labels, values in streams.items()]})
    return lines, time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=300_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shipper-floor-") as work:
        path = Path(work) / "app.log"
        write_lines(path, args.lines, time.time_ns() // 1_000_000 - args.lines)
        tune_process()  # the sidecar's own garbage collector settings
        print("the least a Python shipper does, one thread:")
        for stages, name in enumerate(_STAGES):
            runs = [_run(path, stages) for _ in range(3)]  # the best of three, as below
            lines, seconds = runs[0][0], min(spent for _, spent in runs)
            print(f"  {name:30s} {seconds / lines * 1e6:5.2f} µs of CPU per line "
                  f"({lines:,} lines)")
        print("the sidecar's own stages, one after the other in one thread:")
        total = 0.0
        for name, per_line, count in _sidecar_stages(path):
            total += per_line
            print(f"  {name:30s} {per_line * 1e6:5.2f} µs of CPU per line ({count:,} lines)")
        print(f"  {'all of them':30s} {total * 1e6:5.2f} µs of CPU per line")


def _sidecar_stages(path: Path) -> list[tuple[str, float, int]]:
    """(stage, CPU seconds per line, lines) for the sidecar's stages on ``path``'s lines, each
    timed on its own (the best of three), under the garbage collector settings :func:`main`
    gave the process (the sidecar's)."""
    texts = path.read_text().splitlines()
    parser = LineParser(format="json", service="bench")
    redactor = Redactor()
    config = ShipperConfig(url=None, service="bench")
    refused: list[Exception] = []

    def parse() -> list[Any]:
        out: list[Any] = []
        parser.parse_many(texts, time.time_ns(), None, out)
        return out

    def best(step: Callable[[], object]) -> float:
        spent = []
        for _ in range(3):
            started = time.process_time()
            made = step()
            spent.append(time.process_time() - started)
            del made
        return min(spent)

    events = parse()
    clean = redactor.clean_events(events)
    guard = TypeGuard(config.type_limit)
    entries = make_entries(events, clean, CLEAN_GROUP, redactor.redact_event,
                           refused.append, guard, config.max_line_bytes)
    assert len(entries) == len(texts) and not refused, "every line makes its entry"
    per_request = max(1, config.batch_max_bytes // max(1, entries[0].size))

    def free() -> float:
        made = parse()
        started = time.process_time()
        del made[:]
        return time.process_time() - started

    n = len(texts)
    return [
        ("parse into events", best(parse) / n, n),
        ("redaction check", best(lambda: redactor.clean_events(events)) / n, n),
        ("entries (labels, JSON line)", best(lambda: make_entries(
            events, clean, CLEAN_GROUP, redactor.redact_event, refused.append, guard,
            config.max_line_bytes)) / n, n),
        ("push bodies", best(lambda: [encode_json(entries[i:i + per_request])
                                      for i in range(0, n, per_request)]) / n, n),
        ("freeing the events", min(free() for _ in range(3)) / n, n),
    ]


if __name__ == "__main__":
    main()
