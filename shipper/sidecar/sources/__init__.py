"""The sidecar's sources, one module each and all of one shape (:class:`~.base.Source`):
``file`` (tailing with rotation and positions), ``http`` (Loki push, OTLP/HTTP and JSON lines
over HTTP, decoded by ``wire``) and ``docker`` (container logs through the Engine API). Each
turns what it reads into :class:`~shipper.event.LogEvent` and hands it to the one pipeline;
:data:`SOURCES` is what the runner builds them from, by the ``type`` of their configuration."""

from __future__ import annotations

from typing import Any

from shipper.sidecar.sources.base import Lane, Sample, Source, Wiring
from shipper.sidecar.sources.docker import DockerSource
from shipper.sidecar.sources.file import FileSource
from shipper.sidecar.sources.http import HttpSource

__all__ = ["SOURCES", "DockerSource", "FileSource", "HttpSource", "Lane", "Sample", "Source",
           "Wiring"]

#: every kind of source, by the ``type`` of its configuration
SOURCES: dict[str, type[Source[Any]]] = {
    cls.kind: cls for cls in (FileSource, HttpSource, DockerSource)
}
