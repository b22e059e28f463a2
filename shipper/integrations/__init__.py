"""Framework integrations: a request id and the acting user on every record of a request, and
one access event per request.

==================================  =====================================================
``shipper.integrations.django``     ``ShipperMiddleware`` and the ``LOGGING`` dict for settings.py
``shipper.integrations.asgi``       ``ShipperASGIMiddleware`` (Starlette, FastAPI, any ASGI app)
``shipper.integrations.wsgi``       ``ShipperWSGIMiddleware`` (Flask, any WSGI app)
``shipper.integrations.flask``      ``init_app(app)``: the WSGI middleware, Flask's user and route
``shipper.integrations.celery``     ``init_celery(app)``: task context, task events, delivery
                                    before each worker process ends
==================================  =====================================================

Nothing here imports a framework until its own module is imported: ``pip install
shipper[django]``, ``shipper[fastapi]`` or ``shipper[flask]`` brings the framework in.
Every integration binds the request context of :mod:`shipper.context`, so the ``trace_id``
(the request id), ``actor`` and ``actor_id`` reach every record logged while the request is
handled, including records from other libraries.
"""

from __future__ import annotations

__all__: list[str] = []
