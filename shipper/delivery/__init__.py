"""The delivery engine: from :class:`~shipper.event.LogEvent` to Loki, and to disk while Loki
is away.

``pipeline`` takes events (``Pipeline.submit``), ``batcher`` gathers them, ``sender`` and
``pacing`` time the pushes, ``push`` is the Loki push client over the ``transport`` seam, and
``spool`` keeps what could not be sent; ``labels`` reads Loki's label text (``{a="1"}``)
for the engine, the sidecar and the readers of Loki alike. The engine imports only the event
contract (:mod:`shipper.event`, :mod:`shipper.config`, :mod:`shipper.redact`); sources (the
handler, the sidecar) import the engine, never the other way round.
"""
