"""The delivery engine: from :class:`~shipper.event.LogEvent` to Loki, and to disk while Loki
is away.

``pipeline`` takes events (``Pipeline.submit``) and owns the parts that move them:
``batcher`` gathers them; ``live`` sends fresh batches with their retries, ``offline`` knows
whether Loki is there and when to probe it, ``replay`` sends the spool back between live
batches, all of them through ``link`` (one push and what Loki's answer means) and counting in
``tally``; ``redrive`` pushes the dead letters (what Loki refused) again on request;
``sender`` and ``pacing`` time the pushes, ``push`` is the Loki push client over the
``transport`` seam, ``spool`` keeps what could not be sent and what Loki refused, and
``registry`` holds the process's live pipelines (closed at exit, renewed in a forked child).
``labels`` reads Loki's label text (``{a="1"}``) for the engine, the sidecar and the readers of
Loki alike. The engine imports only the event contract (:mod:`shipper.event`,
:mod:`shipper.config`, :mod:`shipper.redact`); sources (the handler, the sidecar) import the
engine, never the other way round.
"""
