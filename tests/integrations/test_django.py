"""ShipperMiddleware with Django's own test clients (sync and async) and the LOGGING dict."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from tests.support.django_app import setup

setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402

from shipper.context import current_context  # noqa: E402
from shipper.event import Level  # noqa: E402
from shipper.integrations.django import LOGGING, logging_config  # noqa: E402
from shipper.testing import LogCapture  # noqa: E402
from tests.support.django_app.views import VISA  # noqa: E402

_BASE_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]


@pytest.fixture(scope="module")
def users() -> dict[str, Any]:
    model = get_user_model()
    return {
        "alice": model.objects.create_user("alice", password="pw-alice"),
        "root": model.objects.create_user("root", password="pw-root", is_staff=True),
    }


# ---------------------------------------------------------------------------- request ids


def test_generated_request_id_reaches_every_record_and_the_response(logs: LogCapture) -> None:
    response = Client().get("/items/42", HTTP_USER_AGENT="pytest-agent")
    request_id = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    body = response.json()
    assert body["request_id"] == request_id == body["context_trace_id"]
    (lib_event,) = logs.from_logger("thirdparty.db")
    assert lib_event.trace_id == request_id
    event = logs.one("HTTP_REQUEST")
    assert event.trace_id == request_id and event.logger == "shipper.access"
    assert event.level is Level.INFO
    assert {k: event.metadata[k] for k in ("method", "path", "status", "route", "user_agent",
                                           "client_ip")} == {
        "method": "GET", "path": "/items/42", "status": 200, "route": "items/<int:item_id>",
        "user_agent": "pytest-agent", "client_ip": "127.0.0.1"}
    assert current_context() is None


def test_incoming_request_id_is_honoured(logs: LogCapture) -> None:
    response = Client().get("/items/1", HTTP_X_REQUEST_ID="cf-8a1b2c")
    assert response.headers["X-Request-ID"] == "cf-8a1b2c"
    events = logs.from_logger("thirdparty.db") + logs.from_logger("shipper.access")
    assert len(events) == 2 and {e.trace_id for e in events} == {"cf-8a1b2c"}


@pytest.mark.parametrize("bad", ["", "with space", "q" * 129, "line\nbreak", "{json}"])
def test_unusable_request_id_is_replaced(logs: LogCapture, bad: str) -> None:
    response = Client().get("/items/1", HTTP_X_REQUEST_ID=bad)
    request_id = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert logs.one("HTTP_REQUEST").trace_id == request_id


def test_async_stack_propagates_the_request_id(logs: LogCapture) -> None:
    async def run() -> list[Any]:
        client = AsyncClient()
        return [await client.get("/async-items/1"), await client.get("/items/2")]

    responses = asyncio.run(run())
    ids = [r.headers["X-Request-ID"] for r in responses]
    assert [r.json()["context_trace_id"] for r in responses] == ids
    assert [e.trace_id for e in logs.from_logger("thirdparty.db")] == ids
    assert [e.trace_id for e in logs.of_type("HTTP_REQUEST")] == ids


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
TRACER = TracerProvider().get_tracer("tests.django")


@pytest.mark.parametrize("request_id", [None, "cf-8a1b2c"])
def test_traceparent_trace_id_is_the_request_id_on_every_record_and_the_response(
    logs: LogCapture, request_id: str | None,
) -> None:
    headers = {"HTTP_TRACEPARENT": TRACEPARENT}
    if request_id:
        headers["HTTP_X_REQUEST_ID"] = request_id
    response = Client().get("/items/1", **headers)  # type: ignore[arg-type]
    assert response.headers["X-Request-ID"] == TRACE
    assert response.json()["request_id"] == TRACE == response.json()["context_trace_id"]
    events = logs.from_logger("thirdparty.db") + logs.from_logger("shipper.access")
    assert len(events) == 2 and {e.trace_id for e in events} == {TRACE}


def test_async_stack_takes_the_trace_id_from_traceparent(logs: LogCapture) -> None:
    async def run() -> Any:
        return await AsyncClient().get("/async-items/1", headers={"traceparent": TRACEPARENT})

    response = asyncio.run(run())
    assert response.headers["X-Request-ID"] == TRACE == response.json()["context_trace_id"]
    assert [e.trace_id for e in logs.of_type("HTTP_REQUEST")] == [TRACE]


@pytest.mark.parametrize("bad", [
    f"00-{'0' * 32}-00f067aa0ba902b7-01",
    f"00-{TRACE}-00f067aa0ba902b7-01-smuggled",
    f"{TRACEPARENT},{TRACEPARENT}",
    "00-" + "b" * 10_000,
    "\u0000",
])
def test_malformed_traceparent_falls_back_to_the_request_id_header(
    logs: LogCapture, bad: str,
) -> None:
    kept = Client().get("/items/1", HTTP_TRACEPARENT=bad, HTTP_X_REQUEST_ID="cf-1")
    fresh = Client().get("/items/2", HTTP_TRACEPARENT=bad)
    assert kept.status_code == fresh.status_code == 200
    assert kept.headers["X-Request-ID"] == "cf-1"
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["X-Request-ID"])
    assert fresh.headers["X-Request-ID"] != TRACE
    ids = [e.trace_id for e in logs.of_type("HTTP_REQUEST")]
    assert ids == ["cf-1", fresh.headers["X-Request-ID"]]


def test_the_span_opentelemetry_started_around_django_gives_the_request_id(
    logs: LogCapture,
) -> None:
    # what OpenTelemetry's Django instrumentation does before the middleware: a server span
    with TRACER.start_as_current_span("GET items") as span:
        response = Client().get("/items/1", HTTP_X_REQUEST_ID="cf-1")
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert response.headers["X-Request-ID"] == trace_id
    events = logs.from_logger("thirdparty.db") + logs.from_logger("shipper.access")
    assert len(events) == 2 and {e.trace_id for e in events} == {trace_id}


# ---------------------------------------------------------------------------- users


def test_authenticated_user_is_on_every_record(logs: LogCapture,
                                               users: dict[str, Any]) -> None:
    client = Client()
    client.force_login(users["alice"])
    body = client.get("/items/1").json()
    pk = str(users["alice"].pk)
    assert (body["context_actor"], body["context_actor_id"]) == ("USER", pk)
    (lib_event,) = logs.from_logger("thirdparty.db")
    assert (lib_event.actor.value, lib_event.actor_id) == ("USER", pk)
    assert (logs.one("HTTP_REQUEST").actor.value, logs.one("HTTP_REQUEST").actor_id) == ("USER", pk)


def test_staff_user_is_an_admin(logs: LogCapture, users: dict[str, Any]) -> None:
    client = Client()
    client.force_login(users["root"])
    client.get("/items/1")
    assert logs.from_logger("thirdparty.db")[0].actor.value == "ADMIN"
    assert logs.one("HTTP_REQUEST").actor.value == "ADMIN"


def test_anonymous_user_is_a_guest(logs: LogCapture, users: dict[str, Any]) -> None:
    Client().get("/items/1")
    lib_event = logs.from_logger("thirdparty.db")[0]
    assert (lib_event.actor.value, lib_event.actor_id) == ("GUEST", None)
    assert logs.one("HTTP_REQUEST").actor.value == "GUEST"


def test_login_during_the_request_shows_in_the_access_event(
    logs: LogCapture, users: dict[str, Any]
) -> None:
    Client().get("/login/alice")
    event = logs.one("HTTP_REQUEST")
    assert (event.actor.value, event.actor_id) == ("USER", str(users["alice"].pk))


def test_async_stack_resolves_the_user(logs: LogCapture, users: dict[str, Any]) -> None:
    async def run() -> Any:
        client = AsyncClient()
        await client.aforce_login(users["root"])
        return await client.get("/async-items/3")

    body = asyncio.run(run()).json()
    assert (body["context_actor"], body["context_actor_id"]) == ("ADMIN", str(users["root"].pk))
    assert logs.from_logger("thirdparty.db")[0].actor.value == "ADMIN"
    assert logs.one("HTTP_REQUEST").actor.value == "ADMIN"


# ---------------------------------------------------------------------------- levels


@pytest.mark.parametrize(
    ("path", "status", "level"),
    [("/status/200", 200, Level.INFO), ("/status/302", 302, Level.INFO),
     ("/status/403", 403, Level.WARNING), ("/missing", 404, Level.WARNING),
     ("/nowhere", 404, Level.WARNING), ("/status/502", 502, Level.ERROR)],
)
def test_status_maps_to_level(logs: LogCapture, path: str, status: int, level: Level) -> None:
    assert Client().get(path).status_code == status
    event = logs.one("HTTP_REQUEST")
    assert event.metadata["status"] == status and event.level is level


def test_view_exception_is_a_500_error_with_the_exception(logs: LogCapture) -> None:
    response = Client(raise_request_exception=False).get("/fail")
    assert response.status_code == 500
    assert response.headers["X-Request-ID"]
    event = logs.one("HTTP_REQUEST")
    assert event.level is Level.ERROR and event.metadata["status"] == 500
    assert event.metadata["error_type"] == "RuntimeError"
    assert event.exception is not None and "RuntimeError: kaboom" in event.exception
    # Django's own "Internal Server Error" record carries the request id too
    (django_event,) = logs.from_logger("django.request")
    assert django_event.trace_id == event.trace_id


def test_view_exception_still_reaches_the_test_client(logs: LogCapture) -> None:
    with pytest.raises(RuntimeError, match="kaboom"):
        Client().get("/fail")
    assert logs.one("HTTP_REQUEST").level is Level.ERROR


# ---------------------------------------------------------------------------- slow requests


def test_slow_request_is_flagged(logs: LogCapture) -> None:
    middleware = ["tests.support.django_app.middleware.SlowClockMiddleware", *_BASE_MIDDLEWARE]
    with override_settings(MIDDLEWARE=middleware, SHIPPER_SLOW_REQUEST_MS=1000):
        Client().get("/items/1")
    (slow,) = logs.of_type("SLOW_REQUEST")
    assert slow.level is Level.WARNING and slow.metadata["threshold_ms"] == 1000.0
    assert slow.metadata["duration_ms"] == pytest.approx(1500.0)
    assert slow.trace_id == logs.one("HTTP_REQUEST").trace_id


def test_fast_request_is_not_flagged(logs: LogCapture) -> None:
    middleware = ["tests.support.django_app.middleware.FastClockMiddleware", *_BASE_MIDDLEWARE]
    with override_settings(MIDDLEWARE=middleware):
        Client().get("/items/1")
    assert logs.of_type("SLOW_REQUEST") == []
    assert logs.one("HTTP_REQUEST").metadata["duration_ms"] == pytest.approx(10.0)


def test_settings_turn_the_access_log_off(logs: LogCapture) -> None:
    with override_settings(SHIPPER_ACCESS_LOG=False, SHIPPER_SLOW_REQUEST_MS=None):
        response = Client().get("/items/1")
    assert logs.of_type("HTTP_REQUEST") == [] and logs.of_type("SLOW_REQUEST") == []
    assert logs.from_logger("thirdparty.db")[0].trace_id == response.headers["X-Request-ID"]


def test_bad_setting_raises_an_error_naming_it() -> None:
    with override_settings(SHIPPER_SLOW_REQUEST_MS="slow"), pytest.raises(
        ValueError, match="slow_request_ms"
    ):
        Client().get("/items/1")


# ---------------------------------------------------------------------------- secrets


def test_secrets_never_appear_in_what_would_be_sent(logs: LogCapture,
                                                    users: dict[str, Any]) -> None:
    client = Client(raise_request_exception=False)
    client.force_login(users["alice"])
    with override_settings(SHIPPER_LOG_QUERY=True):
        client.post("/leak?access_token=qs_secret_1&page=3",
                    {"username": "alice", "password": "form_secret_2"},
                    HTTP_AUTHORIZATION="Bearer hdr_secret_3", HTTP_X_API_KEY="hdr_secret_4")
        client.get("/fail?password=qs_secret_5")
    session_id = client.cookies["sessionid"].value
    joined = "\n".join(shipped.entry.to_json() for shipped in logs.entries)
    for secret in ("qs_secret_1", "form_secret_2", "hdr_secret_3", "hdr_secret_4",
                   "qs_secret_5", "hunter2", session_id, VISA, VISA.replace(" ", "")):
        assert secret not in joined
    assert "[CARD ****4444]" in joined
    leak_access = next(e for e in logs.of_type("HTTP_REQUEST") if e.metadata["path"] == "/leak")
    assert leak_access.metadata["query"]["page"] == "3"


# ---------------------------------------------------------------------------- LOGGING


def test_logging_config_is_plain_data_with_the_loki_handler() -> None:
    config = logging_config(service="shop", env="prod", url="http://loki:3100",
                            tenant="team-a")
    assert json.loads(json.dumps(config)) == config  # plain strings, usable in settings.py
    loki = config["handlers"]["loki"]
    assert loki == {"class": "shipper.handler.LokiHandler", "level": "INFO",
                    "url": "http://loki:3100", "service": "shop", "env": "prod",
                    "tenant": "team-a"}
    assert config["root"] == {"handlers": ["loki", "console"], "level": "INFO"}
    assert config["disable_existing_loggers"] is False
    assert "console" not in logging_config(console=False)["handlers"]
    assert LOGGING["handlers"]["loki"]["class"] == "shipper.handler.LokiHandler"


def test_logging_dict_configures_a_working_handler_from_the_environment(tmp_path: Any) -> None:
    script = """
import logging, logging.config
from shipper.handler import LokiHandler
from shipper.integrations.django import LOGGING
logging.config.dictConfig(LOGGING)
loki = [h for h in logging.getLogger().handlers if isinstance(h, LokiHandler)]
assert len(loki) == 1, logging.getLogger().handlers
config = loki[0].config
print(config.url, config.service, config.env)
logging.getLogger("shipper.access").info("configured")
logging.shutdown()
"""
    env = {**os.environ, "LOKI_URL": "http://127.0.0.1:9", "SHIPPER_SERVICE": "shop",
           "SHIPPER_ENV": "staging", "SHIPPER_SPOOL_DIR": str(tmp_path),
           "SHIPPER_SPOOL": "true", "LOKI_TIMEOUT": "0.2"}
    env.pop("SHIPPER_CONFIG", None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["http://127.0.0.1:9", "shop", "staging"]
    assert "configured" in result.stderr  # the console handler


def test_no_records_outside_a_request_get_a_request_id(logs: LogCapture) -> None:
    Client().get("/items/1")
    logging.getLogger("thirdparty.db").info("after the request")
    assert logs.from_logger("thirdparty.db")[-1].trace_id is None
