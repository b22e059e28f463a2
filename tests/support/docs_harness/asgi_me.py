"""A documented FastAPI module main.py shown without its logging setup (the root logger at
INFO into a LokiHandler for service "shop" is added here); GET /me with the API token header
X-API-Token: token-42, then once without it (401)."""

from tests.support.docs_harness._common import expect_status, log_to_loki, quiet_test_client

log_to_loki("shop")
quiet_test_client()

from fastapi.testclient import TestClient  # noqa: E402
from main import app  # noqa: E402

with TestClient(app) as client:
    expect_status("GET /me", client.get("/me", headers={"X-API-Token": "token-42"}).status_code)
    expect_status("GET /me without a token", client.get("/me").status_code, 401)
