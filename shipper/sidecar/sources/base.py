"""The one shape of a sidecar source, as Promtail's targets share one: :class:`Source`, what the
runner calls on every source (build, start, stop, reopen, health, positions, metrics), and
:class:`Wiring`, what the runner hands each source it builds. A source reads or receives logs,
turns them into :class:`~shipper.event.LogEvent` and submits them to the pipeline; it never
knows about another source, the runner or the worker processes."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

from shipper.delivery.pipeline import Pipeline
from shipper.sidecar.config import DockerSourceConfig, FileSourceConfig
from shipper.sidecar.formats import LineParser
from shipper.sidecar.positions import Positions

__all__ = ["Lane", "LineShipper", "Sample", "Source", "Wiring", "parser_spec"]

#: hands texts to the pipeline: ``(texts, first_ns, rests)``; text ``i`` is parsed with
#: continuation ``rests[i]`` (multi-line records) and, when it carries no time, ``first_ns + i``
LineShipper = Callable[[list[str], int, "list[str | None] | None"], None]

#: one sample of a source's own metric: (family, label values, value); the families are
#: described in shipper/sidecar/metrics.py, the label values start with the source's name
Sample = tuple[str, tuple[str, ...], float]

ConfigT = TypeVar("ConfigT")


class Lane(NamedTuple):
    """Where a file source's lines go when worker processes parse them (``workers: N``)."""

    ship: LineShipper
    #: lines of this source the workers found invalid in its format
    invalid: Callable[[], int]
    #: lines of this source the workers' drop rules kept out, by reason
    dropped: Callable[[], dict[str, int]] | None = None


def parser_spec(config: FileSourceConfig | DockerSourceConfig, service: str,
                env: str | None) -> dict[str, Any]:
    """The :class:`~shipper.sidecar.formats.LineParser` arguments of a source that parses lines
    (the worker processes build theirs from the same): its format, and the service (its own or
    the default) and env every event gets unless the line names them."""
    return {"format": config.format, "level_pattern": config.level_pattern,
            "timezone": config.timezone, "service": config.service or service, "env": env}


@dataclass(frozen=True)
class Wiring:
    """What the runner hands a source it builds."""

    #: its configured ``name``, else ``<type>#<index in the configuration>``: in log lines,
    #: /healthz, /ready and /metrics
    name: str
    pipeline: Pipeline
    #: the default ``service_name`` and the ``env`` of every event
    service: str
    env: str | None
    #: what the last run saved (file offsets, container timestamps)
    saved: Positions
    #: True while a reader (files, Docker) should wait before it reads on
    pressure: Callable[[], bool]
    #: True while a receiver (HTTP) should answer 429
    overloaded: Callable[[], bool]
    #: says one line on the sidecar's stderr
    report: Callable[[str], None]
    #: the worker processes' lane, for a file source when ``workers: N`` (N >= 2)
    lane: Lane | None = None
    #: file path -> offset Promtail had read up to (``promtail_positions``), for files found
    #: at start-up that have no position of their own
    promtail: Mapping[str, int] | None = None

    def parser(self, config: FileSourceConfig | DockerSourceConfig) -> LineParser:
        return LineParser(**parser_spec(config, self.service, self.env))


class Source(abc.ABC, Generic[ConfigT]):
    """A source of the sidecar, built from its configuration (``ConfigT``) by :meth:`build`.

    The runner builds every source before it starts any (a source that cannot be built fails
    start-up: a port in use, a token file missing), then calls :meth:`start`; SIGHUP calls
    :meth:`reopen`; every ``positions_interval`` the runner takes :meth:`positions` and saves
    them once the pipeline has delivered what was submitted before; :attr:`alive` false turns
    /healthz 503 and stops the sidecar; at shutdown the receivers are stopped first (no new
    requests), then the readers, which read to the end of what they hold until the deadline.
    """

    #: the ``type`` of its configuration: ``file``, ``http``, ``docker``
    kind: ClassVar[str]
    #: it reports positions to save (and needs a writable positions file)
    keeps_positions: ClassVar[bool] = False
    #: it is pushed to (HTTP) rather than reading: stopped first at shutdown
    receiver: ClassVar[bool] = False
    #: an optional dependency it needs: (module, the extra that installs it)
    needs: ClassVar[tuple[str, str] | None] = None

    name: str
    config: ConfigT
    #: lines (or events) read, for /metrics
    lines_read: int = 0
    #: why its thread stopped, when it did
    failed: BaseException | None = None

    @classmethod
    @abc.abstractmethod
    def build(cls, config: ConfigT, wiring: Wiring) -> Source[ConfigT]:
        """The source for ``config``, not started."""

    @abc.abstractmethod
    def describe(self) -> str:
        """What it reads, for the start-up line (``tailing /var/log/app/*.log (json)``)."""

    @abc.abstractmethod
    def start(self) -> None:
        """Start reading or receiving (its own threads)."""

    @abc.abstractmethod
    def stop(self, deadline: float) -> None:
        """Stop by ``deadline`` (a monotonic time): a reader submits what it holds first."""

    def close(self) -> None:
        """Give back what :meth:`build` took (a bound port) when start-up fails before
        :meth:`start`."""

    def reopen(self) -> None:
        """SIGHUP: reopen what it reads (log rotation by rename)."""

    @property
    @abc.abstractmethod
    def alive(self) -> bool:
        """False once it stopped without being asked to (see :attr:`failed`)."""

    @abc.abstractmethod
    def invalid_lines(self) -> int:
        """Lines not valid in their format (shipped as text), for /metrics."""

    def positions(self) -> Positions:
        """Where it has read up to, counting only what it submitted to the pipeline."""
        return Positions()

    def samples(self) -> Iterator[Sample]:
        """Its own metrics (see :data:`Sample`)."""
        return iter(())

    def not_ready(self) -> str | None:
        """Why /ready should answer 503 because of this source (None: it has started and
        takes logs). By default: it runs."""
        return None if self.alive else self.problem()

    def problem(self) -> str | None:
        """Why /healthz should answer 503 because of this source (None: it runs)."""
        if self.alive:
            return None
        return f"{self.name} is not running" + (f": {self.failed}" if self.failed else "")
