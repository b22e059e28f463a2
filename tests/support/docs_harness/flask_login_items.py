"""A documented Flask + Flask-Login module app.py (it sets up its own logging): POST /login/42
logs user 42 in, then GET /items/7 with the session cookie, through Flask's test client. Each
response is closed, as a WSGI server closes it (the access event is written then)."""

from app import app

from tests.support.docs_harness._common import expect_status

client = app.test_client()
for method, path in (("POST", "/login/42"), ("GET", "/items/7")):
    with client.open(path, method=method) as response:
        expect_status(f"{method} {path}", response.status_code)
