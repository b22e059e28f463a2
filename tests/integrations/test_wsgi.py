"""ShipperWSGIMiddleware with Flask's own test client, plain WSGI apps, and Flask's init_app."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

import flask
import pytest
from opentelemetry.sdk.trace import TracerProvider

from shipper.context import current_context
from shipper.event import Level
from shipper.integrations.flask import init_app
from shipper.integrations.wsgi import ShipperWSGIMiddleware
from shipper.testing import LogCapture

VISA = "4111-1111-1111-1111"
_lib = logging.getLogger("thirdparty.db")


class FakeClock:
    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class FakeUser:
    def __init__(self, pk: int | None, staff: bool = False) -> None:
        self.is_authenticated = pk is not None
        self.is_staff = staff
        self.pk = pk


def make_flask() -> flask.Flask:
    app = flask.Flask("shop")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> Any:
        _lib.info("loading item %d", item_id)
        ctx = current_context()
        return {
            "environ_request_id": flask.request.environ["shipper.request_id"],
            "context_trace_id": ctx.trace_id if ctx else None,
            "context_actor": ctx.actor if ctx else None,
        }

    @app.get("/status/<int:code>")
    def status(code: int) -> Any:
        return "s", code

    @app.get("/missing")
    def missing() -> Any:
        flask.abort(404)

    @app.get("/fail")
    def fail() -> Any:
        _lib.warning("about to fail")
        raise RuntimeError("kaboom password=hunter2")

    @app.get("/stream")
    def stream() -> Any:
        def body() -> Iterator[str]:
            for i in range(3):
                _lib.info("chunk %d", i)
                yield "x"

        return flask.Response(flask.stream_with_context(body()))

    @app.post("/leak")
    def leak() -> Any:
        _lib.warning("charging card %s for %s", VISA, flask.request.form.get("email"),
                     extra={"metadata": {"form": flask.request.form.to_dict(),
                                         "headers": dict(flask.request.headers)}})
        return "ok"

    return app


def wrapped(**options: Any) -> flask.Flask:
    app = make_flask()
    app.wsgi_app = ShipperWSGIMiddleware(app.wsgi_app, **options)  # type: ignore[method-assign]
    return app


# ---------------------------------------------------------------------------- request ids


def test_generated_request_id_reaches_every_record_and_the_response(logs: LogCapture) -> None:
    response = wrapped().test_client().get("/items/42", buffered=True)
    request_id = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    body = response.get_json()
    assert body["environ_request_id"] == request_id == body["context_trace_id"]
    (lib_event,) = logs.from_logger("thirdparty.db")
    assert lib_event.trace_id == request_id
    event = logs.one("HTTP_REQUEST")
    assert event.trace_id == request_id and event.logger == "shipper.access"
    assert event.metadata["method"] == "GET" and event.metadata["path"] == "/items/42"
    assert event.metadata["status"] == 200 and event.level is Level.INFO
    assert event.metadata["client_ip"] == "127.0.0.1"
    assert event.metadata["user_agent"].startswith("Werkzeug/")
    assert event.actor.value == "GUEST"
    assert current_context() is None


def test_incoming_request_id_is_honoured(logs: LogCapture) -> None:
    response = wrapped().test_client().get("/items/1", headers={"X-Request-ID": "lb-123"},
                                           buffered=True)
    assert response.headers["X-Request-ID"] == "lb-123"
    events = logs.from_logger("thirdparty.db") + logs.from_logger("shipper.access")
    assert len(events) == 2 and {e.trace_id for e in events} == {"lb-123"}


@pytest.mark.parametrize("bad", ["two words", "x" * 200, "<script>", "a;b"])
def test_unusable_request_id_is_replaced(logs: LogCapture, bad: str) -> None:
    response = wrapped().test_client().get("/items/1", headers={"X-Request-ID": bad},
                                           buffered=True)
    request_id = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert logs.one("HTTP_REQUEST").trace_id == request_id


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
TRACER = TracerProvider().get_tracer("tests.wsgi")


@pytest.mark.parametrize("request_id", [None, "lb-123"])
def test_traceparent_trace_id_is_the_request_id_on_every_record_and_the_response(
    logs: LogCapture, request_id: str | None,
) -> None:
    headers = {"traceparent": TRACEPARENT}
    if request_id:
        headers["X-Request-ID"] = request_id
    response = wrapped().test_client().get("/items/1", headers=headers, buffered=True)
    assert response.headers["X-Request-ID"] == TRACE
    body = response.get_json()
    assert body["environ_request_id"] == TRACE == body["context_trace_id"]
    events = logs.from_logger("thirdparty.db") + logs.from_logger("shipper.access")
    assert len(events) == 2 and {e.trace_id for e in events} == {TRACE}


@pytest.mark.parametrize("bad", [
    f"00-{'0' * 32}-00f067aa0ba902b7-01",
    f"00-{TRACE}-{'0' * 16}-01",
    f"00-{TRACE}-00f067aa0ba902b7-01-smuggled",
    f"{TRACEPARENT},{TRACEPARENT}",  # two headers, joined by the server
    "00-" + "a" * 8000,
    "x",
])
def test_malformed_traceparent_falls_back_to_the_request_id_header(
    logs: LogCapture, bad: str,
) -> None:
    client = wrapped().test_client()
    kept = client.get("/items/1", headers={"traceparent": bad, "X-Request-ID": "lb-1"},
                      buffered=True)
    fresh = client.get("/items/2", headers={"traceparent": bad}, buffered=True)
    assert kept.status_code == fresh.status_code == 200
    assert kept.headers["X-Request-ID"] == "lb-1"
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["X-Request-ID"])
    assert fresh.headers["X-Request-ID"] != TRACE
    ids = [e.trace_id for e in logs.of_type("HTTP_REQUEST")]
    assert ids == ["lb-1", fresh.headers["X-Request-ID"]]


def test_the_span_opentelemetry_started_around_the_app_gives_the_request_id(
    logs: LogCapture,
) -> None:
    app = wrapped()
    shipper_app = app.wsgi_app
    seen: list[str] = []

    def instrumented(environ: dict[str, Any], start_response: Any) -> Any:
        # what OpenTelemetry's WSGI instrumentation does outside the app: a server span
        with TRACER.start_as_current_span("GET /items") as span:
            seen.append(format(span.get_span_context().trace_id, "032x"))
            return shipper_app(environ, start_response)

    app.wsgi_app = instrumented  # type: ignore[method-assign]
    response = app.test_client().get("/items/1", headers={"X-Request-ID": "lb-1"},
                                     buffered=True)
    (trace_id,) = seen
    assert response.headers["X-Request-ID"] == trace_id
    events = logs.from_logger("thirdparty.db") + logs.from_logger("shipper.access")
    assert len(events) == 2 and {e.trace_id for e in events} == {trace_id}


def test_streamed_body_records_carry_the_request_id(logs: LogCapture) -> None:
    response = wrapped().test_client().get("/stream", buffered=True)
    assert response.get_data(as_text=True) == "xxx"
    chunks = logs.from_logger("thirdparty.db")
    assert len(chunks) == 3 and {e.trace_id for e in chunks} == {response.headers["X-Request-ID"]}
    assert logs.one("HTTP_REQUEST").trace_id == response.headers["X-Request-ID"]


# ---------------------------------------------------------------------------- levels


@pytest.mark.parametrize(
    ("path", "status", "level"),
    [("/status/200", 200, Level.INFO), ("/status/301", 301, Level.INFO),
     ("/missing", 404, Level.WARNING), ("/status/422", 422, Level.WARNING),
     ("/status/503", 503, Level.ERROR), ("/nowhere", 404, Level.WARNING)],
)
def test_status_maps_to_level(logs: LogCapture, path: str, status: int, level: Level) -> None:
    wrapped().test_client().get(path, buffered=True)
    event = logs.one("HTTP_REQUEST")
    assert event.metadata["status"] == status and event.level is level


def test_exception_propagated_by_flask_is_a_500_error_and_is_reraised(
    logs: LogCapture,
) -> None:
    app = wrapped()
    app.testing = True  # Flask re-raises view exceptions
    with pytest.raises(RuntimeError, match="kaboom"):
        app.test_client().get("/fail", buffered=True)
    event = logs.one("HTTP_REQUEST")
    assert event.level is Level.ERROR and event.metadata["status"] == 500
    assert event.exception is not None and "RuntimeError: kaboom" in event.exception
    assert logs.from_logger("thirdparty.db")[0].trace_id == event.trace_id


def test_exception_handled_by_flask_is_a_500_error(logs: LogCapture) -> None:
    response = wrapped().test_client().get("/fail", buffered=True)
    assert response.status_code == 500
    event = logs.one("HTTP_REQUEST")
    assert event.level is Level.ERROR and event.metadata["status"] == 500
    # Flask's own "Exception on /fail" record carries the request id too
    (flask_event,) = logs.from_logger("shop")
    assert flask_event.trace_id == event.trace_id and flask_event.exception is not None


# ---------------------------------------------------------------------------- slow requests


def test_slow_request_is_flagged(logs: LogCapture) -> None:
    wrapped(slow_request_ms=500, clock=FakeClock(0.75)).test_client().get("/items/1",
                                                                          buffered=True)
    (slow,) = logs.of_type("SLOW_REQUEST")
    assert slow.level is Level.WARNING and slow.metadata["threshold_ms"] == 500.0
    assert slow.metadata["duration_ms"] == pytest.approx(750.0)
    assert slow.trace_id == logs.one("HTTP_REQUEST").trace_id


def test_fast_request_is_not_flagged(logs: LogCapture) -> None:
    wrapped(clock=FakeClock(0.01)).test_client().get("/items/1", buffered=True)
    assert logs.of_type("SLOW_REQUEST") == []


# ---------------------------------------------------------------------------- plain WSGI


def _environ(**extra: Any) -> dict[str, Any]:
    environ: dict[str, Any] = dict(extra)
    setup_testing_defaults(environ)
    return environ


def test_any_wsgi_app_is_measured_until_the_response_is_closed(logs: LogCapture) -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            _lib.info("producing body")
            yield b"a"
            yield b"b"

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("201 Created", [("Content-Type", "text/plain")])
        return Body()

    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"], seen["headers"] = status, dict(headers)
        return lambda data: None

    middleware = ShipperWSGIMiddleware(app, clock=FakeClock(1.0), slow_request_ms=2500)
    result = middleware(_environ(PATH_INFO="/upload", REQUEST_METHOD="PUT"), start_response)
    assert seen["status"] == "201 Created" and "X-Request-ID" in seen["headers"]
    assert b"".join(result) == b"ab"
    assert logs.of_type("HTTP_REQUEST") == []  # not before the server closes the response
    result.close()  # type: ignore[attr-defined]
    assert closed == [True]
    event = logs.one("HTTP_REQUEST")
    assert event.metadata["status"] == 201 and event.metadata["method"] == "PUT"
    # start, then close: the clock was read twice, 1 s apart... plus nothing in between
    assert event.metadata["duration_ms"] == pytest.approx(1000.0)
    (body_event,) = logs.from_logger("thirdparty.db")
    assert body_event.trace_id == seen["headers"]["X-Request-ID"] == event.trace_id
    assert current_context() is None


def test_error_while_producing_the_body_is_logged_and_reraised(logs: LogCapture) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"first"
        raise OSError("disk gone")

    middleware = ShipperWSGIMiddleware(app)
    result = middleware(_environ(), lambda *a: None)
    with pytest.raises(OSError, match="disk gone"):
        list(result)
    result.close()  # type: ignore[attr-defined]
    event = logs.one("HTTP_REQUEST")
    assert event.level is Level.ERROR and event.metadata["status"] == 500
    assert event.exception is not None and "OSError: disk gone" in event.exception


def test_remote_user_is_the_default_user(logs: LogCapture) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        _lib.info("hello")
        start_response("200 OK", [])
        return [b"ok"]

    result = ShipperWSGIMiddleware(app)(_environ(REMOTE_USER="carol"), lambda *a: None)
    list(result)
    result.close()  # type: ignore[attr-defined]
    (lib_event,) = logs.from_logger("thirdparty.db")
    assert (lib_event.actor.value, lib_event.actor_id) == ("USER", "carol")
    assert logs.one("HTTP_REQUEST").actor_id == "carol"


def test_get_user_from_environ(logs: LogCapture) -> None:
    app = wrapped(get_user=lambda environ: ("ADMIN", environ.get("HTTP_X_STAFF")))
    app.test_client().get("/items/1", headers={"X-Staff": "s-1"}, buffered=True)
    (lib_event,) = logs.from_logger("thirdparty.db")
    assert (lib_event.actor.value, lib_event.actor_id) == ("ADMIN", "s-1")


def test_get_user_with_a_wrong_shape_does_not_break_the_request(logs: LogCapture) -> None:
    app = wrapped(get_user=lambda environ: 42)
    response = app.test_client().get("/items/1", buffered=True)
    assert response.status_code == 200 and logs.one("HTTP_REQUEST").actor.value == "GUEST"


# ---------------------------------------------------------------------------- Flask init_app


def test_init_app_binds_the_user_and_records_the_route(logs: LogCapture) -> None:
    app = make_flask()
    users = {"7": FakeUser(7), "1": FakeUser(1, staff=True)}
    middleware = init_app(
        app, get_user=lambda: users.get(flask.request.headers.get("X-User", ""), FakeUser(None)))
    assert app.wsgi_app is middleware and app.extensions["shipper"] is middleware
    client = app.test_client()
    body = client.get("/items/5", headers={"X-User": "7"}, buffered=True).get_json()
    client.get("/items/6", headers={"X-User": "1"}, buffered=True)
    client.get("/items/8", buffered=True)
    assert body["context_actor"] == "USER"
    lib_events = logs.from_logger("thirdparty.db")
    assert [(e.actor.value, e.actor_id) for e in lib_events] == [
        ("USER", "7"), ("ADMIN", "1"), ("GUEST", None)]
    accesses = logs.of_type("HTTP_REQUEST")
    assert [(e.actor.value, e.actor_id) for e in accesses] == [
        ("USER", "7"), ("ADMIN", "1"), ("GUEST", None)]
    assert {e.metadata["route"] for e in accesses} == {"/items/<int:item_id>"}


def test_init_app_takes_the_trace_id_from_traceparent(logs: LogCapture) -> None:
    app = make_flask()
    init_app(app, get_user=lambda: FakeUser(7))
    response = app.test_client().get("/items/5", headers={"traceparent": TRACEPARENT},
                                     buffered=True)
    assert response.headers["X-Request-ID"] == TRACE
    events = logs.from_logger("thirdparty.db") + logs.of_type("HTTP_REQUEST")
    assert [(e.trace_id, e.actor_id) for e in events] == [(TRACE, "7"), (TRACE, "7")]


def test_init_app_twice_raises() -> None:
    app = make_flask()
    init_app(app)
    with pytest.raises(RuntimeError, match="already"):
        init_app(app)


# ---------------------------------------------------------------------------- secrets


def test_secrets_never_appear_in_what_would_be_sent(logs: LogCapture) -> None:
    app = make_flask()
    init_app(app, include_query=True)
    client = app.test_client()
    client.set_cookie("session", "ck_secret_4")
    client.post("/leak?api_key=qs_secret_1&lang=en",
                data={"email": "bob@example.com", "password": "form_secret_2"},
                headers={"Authorization": "Bearer hdr_secret_3"}, buffered=True)
    client.get("/fail?token=qs_secret_5", buffered=True)
    joined = "\n".join(shipped.entry.to_json() for shipped in logs.entries)
    for secret in ("qs_secret_1", "form_secret_2", "hdr_secret_3", "ck_secret_4", "qs_secret_5",
                   "hunter2", VISA, VISA.replace("-", "")):
        assert secret not in joined
    assert "bob@example.com" in joined  # e-mails are masked only when asked
    assert "[CARD ****1111]" in joined
    leak_access = next(e for e in logs.of_type("HTTP_REQUEST") if e.metadata["path"] == "/leak")
    assert leak_access.metadata["query"]["lang"] == "en"


def test_bad_settings_raise_errors_naming_them() -> None:
    app = make_flask()
    with pytest.raises(ValueError, match="slow_request_ms"):
        ShipperWSGIMiddleware(app.wsgi_app, slow_request_ms="fast")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="app"):
        ShipperWSGIMiddleware("not an app")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Flask"):
        init_app(object())  # type: ignore[arg-type]
