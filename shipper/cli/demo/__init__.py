"""``shipper demo``: realistic marketplace traffic through the handler, so the stack has data.

The traffic goes out the way an app sends it: :class:`~shipper.api.SystemLog` calls and plain
``logging`` calls, received by a :class:`~shipper.handler.LokiHandler`. The parts are separate
so that each can be checked on its own:

* :mod:`~shipper.cli.demo.marketplace`: the marketplace's world and what one request or job
  logs, as :class:`DemoEvent` values (pure: same seed, same events);
* :mod:`~shipper.cli.demo.scenarios`: the ``normal`` and ``incident`` scenarios, live, and the
  history before them (:func:`live_events`, :func:`backfill_events`, :func:`yesterday_events`);
* :mod:`~shipper.cli.demo.emit`: :class:`DemoEmitter` makes each event the call an app would
  make; :class:`JsonLinesFileHandler` writes what is sent as JSON lines (``--file``);
* :mod:`~shipper.cli.demo.command`: :class:`DemoOptions` and :func:`run_demo`, which check
  Loki's limits, wire the parts to a handler and pace the live part.

Re-exported here: what the ``shipper`` command and the tests use.
"""

from shipper.cli.demo.command import (
    BACKFILL_SAFETY_S,
    DEFAULT_REJECT_OLD_SAMPLES_MAX_AGE,
    DemoOptions,
    run_demo,
)
from shipper.cli.demo.emit import (
    DemoEmitter,
    EventTimeFilter,
    JsonLinesFileHandler,
    entry_to_file_object,
    file_object_to_entry,
)
from shipper.cli.demo.marketplace import KINDS, SLOW_REQUEST_MS, DemoError, DemoEvent
from shipper.cli.demo.scenarios import (
    INCIDENT_START_S,
    backfill_events,
    live_events,
    yesterday_events,
)

__all__ = [
    "BACKFILL_SAFETY_S",
    "DEFAULT_REJECT_OLD_SAMPLES_MAX_AGE",
    "INCIDENT_START_S",
    "KINDS",
    "SLOW_REQUEST_MS",
    "DemoEmitter",
    "DemoError",
    "DemoEvent",
    "DemoOptions",
    "EventTimeFilter",
    "JsonLinesFileHandler",
    "backfill_events",
    "entry_to_file_object",
    "file_object_to_entry",
    "live_events",
    "run_demo",
    "yesterday_events",
]
