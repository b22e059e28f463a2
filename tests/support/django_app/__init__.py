"""A small Django project for tests/integrations/test_django.py (Django settings can be
configured once per process, so only that module uses it)."""

from __future__ import annotations


def setup() -> None:
    """Configure Django for the tests (once) and create the in-memory database."""
    import django
    from django.conf import settings

    if settings.configured:
        return
    settings.configure(
        DEBUG=False,
        SECRET_KEY="test-secret-key-not-used-anywhere-else",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF="tests.support.django_app.urls",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
        ],
        MIDDLEWARE=[
            "shipper.integrations.django.ShipperMiddleware",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        USE_TZ=True,
        # leave the process's logging alone: dictConfig would close other tests' handlers
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.db import connection

    # an in-memory database shared by every thread (sync views run in a thread under ASGI)
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
