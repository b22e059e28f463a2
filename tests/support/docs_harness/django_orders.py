"""A documented settings.py, loaded by Django; one anonymous GET /orders/42/ through Django's
test client (the whole middleware chain runs)."""

from tests.support.docs_harness import _django

_django.setup("settings")
_django.get("/orders/42/")
