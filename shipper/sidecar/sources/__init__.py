"""The sidecar's sources, one module each: ``file`` (tailing with rotation and positions),
``http`` (Loki push, OTLP/HTTP and JSON lines over HTTP, decoded by ``wire``) and ``docker``
(container logs through the Engine API). Each turns what it reads into
:class:`~shipper.event.LogEvent` and hands it to the one pipeline."""
