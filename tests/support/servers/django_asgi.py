"""Django's ASGI handler (which has no lifespan support) under uvicorn, wrapped in
ShipperASGIMiddleware for the lifespan only: Django's own ShipperMiddleware writes the access
events, so the outer middleware's access log is off."""

from __future__ import annotations

from tests.support.django_app import setup
from tests.support.servers import _logging

setup()
_logging.setup()

from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

from shipper.integrations.asgi import ShipperASGIMiddleware  # noqa: E402

settings.ALLOWED_HOSTS = ["*"]
application = ShipperASGIMiddleware(get_asgi_application(), access_log=False)
