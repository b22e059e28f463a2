"""ShipperASGIMiddleware with Starlette's own TestClient (FastAPI runs on the same middleware
stack: ``app.add_middleware(ShipperASGIMiddleware)``)."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from shipper.context import bind_context, current_context
from shipper.event import Level
from shipper.integrations.asgi import ShipperASGIMiddleware
from shipper.testing import LogCapture

VISA = "4242 4242 4242 4242"
_lib = logging.getLogger("thirdparty.db")


class FakeClock:
    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class HeaderAuth(AuthenticationBackend):
    """``X-User: name`` logs in; ``X-Admin: 1`` adds the admin scope."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.headers.get("x-user")
        if not name:
            return None
        scopes = ["authenticated"] + (["admin"] if conn.headers.get("x-admin") else [])
        return AuthCredentials(scopes), SimpleUser(name)


async def items(request: Request) -> Response:
    _lib.info("loading item %s", request.path_params["item_id"])
    ctx = current_context()
    return JSONResponse({
        "state_request_id": request.state.request_id,
        "context_trace_id": ctx.trace_id if ctx else None,
        "context_actor": ctx.actor if ctx else None,
    })


def sync_items(request: Request) -> Response:  # runs in Starlette's thread pool
    _lib.info("sync endpoint")
    return PlainTextResponse("ok")


async def status(request: Request) -> Response:
    return PlainTextResponse("s", status_code=int(request.path_params["code"]))


async def fail(request: Request) -> Response:
    _lib.warning("about to fail")
    raise RuntimeError("kaboom with password=hunter2")


async def login(request: Request) -> Response:
    bind_context(actor="USER", actor_id="u-77")  # as an async dependency would
    _lib.info("logged in")
    return PlainTextResponse("in")


async def leak(request: Request) -> Response:
    _lib.warning("charging card %s with token=tok_live_abc", VISA,
                 extra={"metadata": {"password": "hunter2",
                                     "upstream": {"Authorization": "Bearer sk_live_999"},
                                     "request_headers": dict(request.headers)}})
    return PlainTextResponse("ok")


async def stream(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        for i in range(3):
            _lib.info("chunk %d", i)
            yield b"x"

    return StreamingResponse(body())


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


ROUTES = [
    Route("/items/{item_id}", items),
    Route("/sync", sync_items),
    Route("/status/{code}", status),
    Route("/fail", fail),
    Route("/login", login),
    Route("/leak", leak),
    Route("/stream", stream),
    WebSocketRoute("/ws", ws),
]


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    logging.getLogger("thirdparty.startup").info("starting")
    yield


def make_app(auth: str | None = None, **options: Any) -> Starlette:
    """``auth``: None, "outside" (auth runs before shipper) or "inside"."""
    shipper = Middleware(ShipperASGIMiddleware, **options)
    authm = Middleware(AuthenticationMiddleware, backend=HeaderAuth())
    middleware = {None: [shipper], "outside": [authm, shipper], "inside": [shipper, authm]}[auth]
    return Starlette(routes=ROUTES, middleware=middleware, lifespan=lifespan)


# ---------------------------------------------------------------------------- request ids


def test_generated_request_id_reaches_every_record_and_the_response(logs: LogCapture) -> None:
    with TestClient(make_app()) as client:
        response = client.get("/items/42")
    request_id = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    body = response.json()
    assert body["state_request_id"] == request_id == body["context_trace_id"]
    (lib_event,) = logs.from_logger("thirdparty.db")
    assert lib_event.trace_id == request_id
    event = logs.one("HTTP_REQUEST")
    assert event.trace_id == request_id and event.logger == "shipper.access"
    assert event.metadata["method"] == "GET" and event.metadata["path"] == "/items/42"
    assert event.metadata["route"] == "/items/{item_id}"
    assert event.metadata["status"] == 200 and event.level is Level.INFO
    assert event.metadata["client_ip"] == "testclient"
    assert event.metadata["user_agent"] == "testclient"
    assert isinstance(event.metadata["duration_ms"], float)
    assert event.actor.value == "GUEST"
    assert current_context() is None  # nothing leaks out of the request


def test_incoming_request_id_is_honoured(logs: LogCapture) -> None:
    with TestClient(make_app()) as client:
        response = client.get("/items/1", headers={"X-Request-ID": "edge-7f3a:01"})
    assert response.headers["x-request-id"] == "edge-7f3a:01"
    events = logs.from_logger("thirdparty.db") + logs.from_logger("shipper.access")
    assert len(events) == 2
    assert {e.trace_id for e in events} == {"edge-7f3a:01"}


@pytest.mark.parametrize("bad", ['a"b', "has space", "x" * 129, "tab\tid", "é-id"])
def test_unusable_request_id_is_replaced(logs: LogCapture, bad: str) -> None:
    with TestClient(make_app()) as client:
        response = client.get("/items/1", headers={"X-Request-ID": bad.encode("utf-8")})
    request_id = response.headers["x-request-id"]
    assert request_id != bad and re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert logs.one("HTTP_REQUEST").trace_id == request_id


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
TRACER = TracerProvider().get_tracer("tests.asgi")


@pytest.mark.parametrize("request_id", [None, "edge-7f3a:01"])
def test_traceparent_trace_id_is_the_request_id_on_every_record_and_the_response(
    logs: LogCapture, request_id: str | None,
) -> None:
    headers = {"traceparent": TRACEPARENT}
    if request_id:
        headers["X-Request-ID"] = request_id  # the trace's id wins over a proxy's request id
    with TestClient(make_app()) as client:
        response = client.get("/items/1", headers=headers)
    assert response.headers["x-request-id"] == TRACE
    assert response.json()["state_request_id"] == TRACE == response.json()["context_trace_id"]
    events = logs.from_logger("thirdparty.db") + logs.from_logger("shipper.access")
    assert len(events) == 2 and {e.trace_id for e in events} == {TRACE}


@pytest.mark.parametrize("bad", [
    f"00-{'0' * 32}-00f067aa0ba902b7-01",
    f"00-{TRACE}-{'0' * 16}-01",
    f"ff-{TRACE}-00f067aa0ba902b7-01",
    f"00-{TRACE.upper()}-00f067aa0ba902b7-01",
    f"00-{TRACE}-00f067aa0ba902b7-01-smuggled",
    "00-" + "f" * 5000,
    "garbage",
])
def test_malformed_traceparent_falls_back_to_the_request_id_header(
    logs: LogCapture, bad: str,
) -> None:
    with TestClient(make_app()) as client:
        kept = client.get("/items/1", headers={"traceparent": bad, "X-Request-ID": "lb-1"})
        fresh = client.get("/items/2", headers={"traceparent": bad})
    assert kept.status_code == fresh.status_code == 200
    assert kept.headers["x-request-id"] == "lb-1"
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["x-request-id"])
    assert fresh.headers["x-request-id"] != TRACE
    ids = [e.trace_id for e in logs.of_type("HTTP_REQUEST")]
    assert ids == ["lb-1", fresh.headers["x-request-id"]]


def test_two_traceparent_headers_are_no_trace_context(logs: LogCapture) -> None:
    other = f"00-{'1' * 32}-00f067aa0ba902b7-01"
    with TestClient(make_app()) as client:
        response = client.get("/items/1", headers=[("traceparent", TRACEPARENT),
                                                   ("traceparent", other)])
    assert response.headers["x-request-id"] not in (TRACE, "1" * 32)
    assert logs.one("HTTP_REQUEST").trace_id == response.headers["x-request-id"]


def test_the_span_opentelemetry_started_around_the_app_gives_the_request_id(
    logs: LogCapture,
) -> None:
    inner = make_app()
    seen: list[str] = []

    async def instrumented(scope: Any, receive: Any, send: Any) -> None:
        # what OpenTelemetry's ASGI instrumentation does outside the app: a server span
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        with TRACER.start_as_current_span("GET /items") as span:
            seen.append(format(span.get_span_context().trace_id, "032x"))
            await inner(scope, receive, send)

    with TestClient(instrumented) as client:
        response = client.get("/items/1", headers={"X-Request-ID": "lb-1"})
    (trace_id,) = seen
    assert response.headers["x-request-id"] == trace_id
    events = logs.from_logger("thirdparty.db") + logs.from_logger("shipper.access")
    assert len(events) == 2 and {e.trace_id for e in events} == {trace_id}


def test_custom_request_id_header(logs: LogCapture) -> None:
    with TestClient(make_app(request_id_header="X-Correlation-ID")) as client:
        response = client.get("/items/1", headers={"X-Correlation-ID": "corr-1"})
    assert response.headers["x-correlation-id"] == "corr-1"
    assert logs.one("HTTP_REQUEST").trace_id == "corr-1"


def test_sync_endpoints_in_the_thread_pool_see_the_request_id(logs: LogCapture) -> None:
    with TestClient(make_app()) as client:
        response = client.get("/sync")
    (lib_event,) = logs.from_logger("thirdparty.db")
    assert lib_event.trace_id == response.headers["x-request-id"]


def test_streamed_body_records_carry_the_request_id(logs: LogCapture) -> None:
    with TestClient(make_app()) as client:
        response = client.get("/stream")
    assert response.text == "xxx"
    chunks = logs.from_logger("thirdparty.db")
    assert len(chunks) == 3
    assert {e.trace_id for e in chunks} == {response.headers["x-request-id"]}


# ---------------------------------------------------------------------------- levels


@pytest.mark.parametrize(
    ("code", "level"),
    [(200, Level.INFO), (302, Level.INFO), (404, Level.WARNING), (429, Level.WARNING),
     (500, Level.ERROR), (503, Level.ERROR)],
)
def test_status_maps_to_level(logs: LogCapture, code: int, level: Level) -> None:
    with TestClient(make_app()) as client:
        client.get(f"/status/{code}", follow_redirects=False)
    event = logs.one("HTTP_REQUEST")
    assert event.metadata["status"] == code and event.level is level


def test_unhandled_exception_is_a_500_error_and_is_reraised(logs: LogCapture) -> None:
    with TestClient(make_app()) as client, pytest.raises(RuntimeError, match="kaboom"):
        client.get("/fail")
    event = logs.one("HTTP_REQUEST")
    assert event.level is Level.ERROR and event.metadata["status"] == 500
    assert event.metadata["error_type"] == "RuntimeError"
    assert event.exception is not None and "RuntimeError: kaboom" in event.exception
    assert (logs.from_logger("thirdparty.db")[0].trace_id == event.trace_id)


def test_unhandled_exception_still_answers_500_to_the_client(logs: LogCapture) -> None:
    with TestClient(make_app(), raise_server_exceptions=False) as client:
        response = client.get("/fail")
    assert response.status_code == 500
    assert logs.one("HTTP_REQUEST").metadata["status"] == 500


def test_unknown_route_is_a_404_warning(logs: LogCapture) -> None:
    with TestClient(make_app()) as client:
        response = client.get("/nope")
    assert response.status_code == 404
    event = logs.one("HTTP_REQUEST")
    assert event.level is Level.WARNING and "route" not in event.metadata


# ---------------------------------------------------------------------------- slow requests


def test_slow_request_is_flagged(logs: LogCapture) -> None:
    with TestClient(make_app(slow_request_ms=1000, clock=FakeClock(1.5))) as client:
        client.get("/items/1")
    (slow,) = logs.of_type("SLOW_REQUEST")
    assert slow.level is Level.WARNING
    assert slow.metadata["duration_ms"] == pytest.approx(1500.0)
    assert slow.metadata["threshold_ms"] == 1000.0
    assert slow.trace_id == logs.one("HTTP_REQUEST").trace_id
    assert logs.one("HTTP_REQUEST").level is Level.INFO


def test_fast_request_is_not_flagged(logs: LogCapture) -> None:
    with TestClient(make_app(slow_request_ms=1000, clock=FakeClock(0.2))) as client:
        client.get("/items/1")
    assert logs.of_type("SLOW_REQUEST") == []


def test_access_log_off_keeps_context_and_slow_warnings(logs: LogCapture) -> None:
    with TestClient(make_app(access_log=False, clock=FakeClock(2.0))) as client:
        response = client.get("/items/1")
    assert logs.of_type("HTTP_REQUEST") == []
    assert len(logs.of_type("SLOW_REQUEST")) == 1
    assert logs.from_logger("thirdparty.db")[0].trace_id == response.headers["x-request-id"]


# ---------------------------------------------------------------------------- users


def test_user_from_auth_middleware_outside_is_on_every_record(logs: LogCapture) -> None:
    with TestClient(make_app(auth="outside")) as client:
        body = client.get("/items/1", headers={"X-User": "alice"}).json()
    assert body["context_actor"] == "USER"
    (lib_event,) = logs.from_logger("thirdparty.db")
    assert (lib_event.actor.value, lib_event.actor_id) == ("USER", "alice")
    event = logs.one("HTTP_REQUEST")
    assert (event.actor.value, event.actor_id) == ("USER", "alice")


def test_admin_scope_makes_an_admin(logs: LogCapture) -> None:
    with TestClient(make_app(auth="outside")) as client:
        client.get("/items/1", headers={"X-User": "root", "X-Admin": "1"})
    assert logs.from_logger("thirdparty.db")[0].actor.value == "ADMIN"
    assert logs.one("HTTP_REQUEST").actor.value == "ADMIN"


def test_anonymous_user_is_a_guest(logs: LogCapture) -> None:
    with TestClient(make_app(auth="outside")) as client:
        client.get("/items/1")
    assert logs.from_logger("thirdparty.db")[0].actor.value == "GUEST"
    assert logs.one("HTTP_REQUEST").actor.value == "GUEST"


def test_user_from_auth_middleware_inside_reaches_the_access_event(logs: LogCapture) -> None:
    with TestClient(make_app(auth="inside")) as client:
        client.get("/items/1", headers={"X-User": "bob"})
    event = logs.one("HTTP_REQUEST")
    assert (event.actor.value, event.actor_id) == ("USER", "bob")


@pytest.mark.parametrize("is_async", [False, True])
def test_get_user_callable(logs: LogCapture, is_async: bool) -> None:
    def get_user(scope: Any) -> Any:
        for name, value in scope["headers"]:
            if name == b"x-api-client":
                return ("CREATOR", value.decode())
        return None

    async def aget_user(scope: Any) -> Any:
        return get_user(scope)

    resolver: Callable[[Any], Any] = aget_user if is_async else get_user
    with TestClient(make_app(get_user=resolver)) as client:
        client.get("/items/1", headers={"X-API-Client": "c-9"})
    (lib_event,) = logs.from_logger("thirdparty.db")
    assert (lib_event.actor.value, lib_event.actor_id) == ("CREATOR", "c-9")
    assert logs.one("HTTP_REQUEST").actor_id == "c-9"


def test_user_bound_by_the_app_reaches_the_access_event(logs: LogCapture) -> None:
    with TestClient(make_app()) as client:
        client.get("/login")
    event = logs.one("HTTP_REQUEST")
    assert (event.actor.value, event.actor_id) == ("USER", "u-77")


def test_failing_get_user_does_not_break_the_request(logs: LogCapture) -> None:
    def get_user(scope: Any) -> Any:
        raise LookupError("user store down")

    with TestClient(make_app(get_user=get_user)) as client:
        response = client.get("/items/1")
    assert response.status_code == 200
    assert logs.one("HTTP_REQUEST").actor.value == "GUEST"


# ---------------------------------------------------------------------------- other scopes


def test_lifespan_and_websocket_pass_through_untouched(logs: LogCapture) -> None:
    with TestClient(make_app()) as client, client.websocket_connect("/ws") as websocket:
        assert websocket.receive_text() == "hello"
    assert logs.of_type("HTTP_REQUEST") == []
    (startup,) = logs.from_logger("thirdparty.startup")
    assert startup.trace_id is None


# ---------------------------------------------------------------------------- secrets


def test_secrets_never_appear_in_what_would_be_sent(logs: LogCapture) -> None:
    with TestClient(make_app(include_query=True), raise_server_exceptions=False) as client:
        client.get("/leak?access_token=qs_secret_1&page=2",
                   headers={"Authorization": "Bearer hdr_secret_2"})
        client.get("/fail?password=qs_secret_3")
    sent = [shipped.entry.to_json() for shipped in logs.entries]
    joined = "\n".join(sent)
    for secret in ("qs_secret_1", "hdr_secret_2", "qs_secret_3", "hunter2", "sk_live_999",
                   "tok_live_abc", VISA, VISA.replace(" ", "")):
        assert secret not in joined
    leak_access = next(e for e in logs.of_type("HTTP_REQUEST") if e.metadata["path"] == "/leak")
    assert leak_access.metadata["query"]["page"] == "2"  # the rest of the query is kept
    assert "[CARD ****4242]" in joined


def test_query_string_is_left_out_by_default(logs: LogCapture) -> None:
    with TestClient(make_app()) as client:
        client.get("/items/1?token=abc")
    event = logs.one("HTTP_REQUEST")
    assert "query" not in event.metadata and event.metadata["path"] == "/items/1"


# ---------------------------------------------------------------------------- settings


def test_bad_settings_raise_errors_naming_them() -> None:
    app = Starlette()
    with pytest.raises(ValueError, match="slow_request_ms"):
        ShipperASGIMiddleware(app, slow_request_ms=-5)
    with pytest.raises(ValueError, match="request_id_header"):
        ShipperASGIMiddleware(app, request_id_header="X Request")
    with pytest.raises(TypeError, match="get_user"):
        ShipperASGIMiddleware(app, get_user="alice")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="logger"):
        ShipperASGIMiddleware(app, logger="shipper.internal.access")
