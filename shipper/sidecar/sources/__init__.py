"""The sidecar's sources, one module each and all of one shape (:class:`~.base.Source`):
``file`` (tailing with rotation and positions), ``http`` (Loki push, OTLP/HTTP and JSON lines
over HTTP, decoded by ``wire``) and ``docker`` (container logs through the Engine API). Each
turns what it reads into :class:`~shipper.event.LogEvent` and hands it to the one pipeline;
:func:`source_class` is what the runner builds them from, by the ``type`` of their
configuration.

A source's module is imported when a source of its type is configured: a sidecar that only
tails files never loads the HTTP servers, the OTLP decoders or the Docker client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shipper.sidecar.sources.base import Lane, Sample, Source, Wiring

if TYPE_CHECKING:
    from shipper.sidecar.sources.docker import DockerSource
    from shipper.sidecar.sources.file import FileSource
    from shipper.sidecar.sources.http import HttpSource

__all__ = ["DockerSource", "FileSource", "HttpSource", "Lane", "Sample", "Source",
           "Wiring", "source_class"]


def source_class(kind: str) -> type[Source[Any]]:
    """The source class of a configuration's ``type`` (``file``, ``http``, ``docker``);
    KeyError for any other."""
    if kind == "file":
        from shipper.sidecar.sources.file import FileSource

        return FileSource
    if kind == "http":
        from shipper.sidecar.sources.http import HttpSource

        return HttpSource
    if kind == "docker":
        from shipper.sidecar.sources.docker import DockerSource

        return DockerSource
    raise KeyError(kind)


def __getattr__(name: str) -> Any:
    """``DockerSource``, ``FileSource`` and ``HttpSource``, imported when first named."""
    kind = {"FileSource": "file", "HttpSource": "http", "DockerSource": "docker"}.get(name)
    if kind is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return source_class(kind)
