"""A minimal Django project around a documented settings module.

``setup(module)`` writes ``harness_settings.py``, which imports the documented settings and adds
only what they leave out (secret key, URLs, apps, an in-memory database), then starts Django.
The one view, ``GET /orders/<id>/``, logs ``ORDER_VIEWED`` on the logger ``shop.orders``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from django.http import HttpRequest, JsonResponse

from tests.support.docs_harness._common import expect_status

_DEFAULTS: dict[str, Any] = {
    "SECRET_KEY": "docs-harness-not-secret",
    "ALLOWED_HOSTS": ["testserver"],
    "ROOT_URLCONF": "tests.support.docs_harness._django",
    "INSTALLED_APPS": ["django.contrib.auth", "django.contrib.contenttypes",
                       "django.contrib.sessions", "django.contrib.messages"],
    "DATABASES": {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    "USE_TZ": True,
    "DEFAULT_AUTO_FIELD": "django.db.models.AutoField",
}


def setup(settings_module: str | None = "settings", **overrides: Any) -> None:
    lines = [f"from {settings_module} import *  # the settings as documented\n"
             if settings_module else ""]
    lines += [f"globals().setdefault({key!r}, {value!r})\n" for key, value in _DEFAULTS.items()]
    lines += [f"{key} = {value!r}\n" for key, value in overrides.items()]
    Path("harness_settings.py").write_text("".join(lines), encoding="utf-8")
    os.environ["DJANGO_SETTINGS_MODULE"] = "harness_settings"
    import django

    django.setup()


def get(path: str, *, user: Any = None) -> None:
    from django.test import Client

    client = Client()
    if user is not None:
        client.force_login(user)
    expect_status(f"GET {path}", client.get(path).status_code)


def order(request: HttpRequest, order_id: int) -> JsonResponse:
    logging.getLogger("shop.orders").info(
        "Order %s viewed", order_id,
        extra={"type": "ORDER_VIEWED", "metadata": {"order_id": order_id}},
    )
    return JsonResponse({"order_id": order_id})


def _urls() -> list[Any]:
    from django.urls import path

    return [path("orders/<int:order_id>/", order)]


urlpatterns = _urls()
