"""A documented ASGI app module main.py (it sets up its own logging); GET /items/42 through the
framework's test client, with the app's lifespan."""

from fastapi.testclient import TestClient
from main import app

from tests.support.docs_harness._common import expect_status, quiet_test_client

quiet_test_client()
with TestClient(app) as client:
    expect_status("GET /items/42", client.get("/items/42").status_code)
