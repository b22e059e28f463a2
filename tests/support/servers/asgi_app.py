"""Starlette under uvicorn (and gunicorn's uvicorn workers).

``app``: wrapped in ShipperASGIMiddleware, one WORK event and one access event per request.
``bare``: no shipper middleware at all (one WORK event per request): only the SIGTERM hook
stands between its queue and the signal.
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from shipper.integrations.asgi import ShipperASGIMiddleware
from tests.support.servers import _logging

_logging.setup()
log = logging.getLogger("app")


async def work(request: Request) -> Response:
    log.info("work %s", request.path_params["n"], extra={"type": "WORK"})
    return PlainTextResponse("ok")


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


routes = [Route("/work/{n}", work), Route("/health", health)]
bare = Starlette(routes=routes)
app = ShipperASGIMiddleware(Starlette(routes=routes))
