"""A documented Flask module app.py (it sets up its own logging); GET /items/42 through Flask's
test client. The response is closed, as a WSGI server closes it (the access event is written
then)."""

from app import app

from tests.support.docs_harness._common import expect_status

with app.test_client().get("/items/42") as response:
    expect_status("GET /items/42", response.status_code)
