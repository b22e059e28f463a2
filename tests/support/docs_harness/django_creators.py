"""A documented middleware subclass in shop_middleware.py, first in MIDDLEWARE of settings that
ship to Loki (logging_config); a user of the group "creators" logs in and GETs /orders/42/."""

from tests.support.docs_harness import _django

_django.setup(
    None,
    MIDDLEWARE=[
        "shop_middleware.AppShipperMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ],
    LOGGING={
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"loki": {"class": "shipper.LokiHandler", "service": "shop"}},
        "root": {"handlers": ["loki"], "level": "INFO"},
    },
)

from django.contrib.auth.models import Group, User  # noqa: E402
from django.core.management import call_command  # noqa: E402

call_command("migrate", verbosity=0)
creator = User.objects.create_user("maria")
creator.groups.add(Group.objects.create(name="creators"))
_django.get("/orders/42/", user=creator)
