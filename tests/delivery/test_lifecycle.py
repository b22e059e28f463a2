"""shipper.shutdown(), the SIGTERM hook and the ASGI lifespan, in process (the same paths under
real servers are in test_deploy_servers.py and test_celery_worker.py)."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shipper
from shipper import LokiHandler, ShutdownReport, lifecycle
from shipper.delivery.registry import live_pipelines
from shipper.integrations.asgi import ShipperASGIMiddleware
from shipper.lifecycle import _on_sigterm
from tests.support.fakeloki import FakeLoki

Message = dict[str, Any]


@pytest.fixture
def fake() -> Iterator[FakeLoki]:
    with FakeLoki(rate_limit=False) as loki:
        yield loki


@pytest.fixture(autouse=True)
def _fresh_process_state() -> Iterator[None]:
    """Each test as a fresh process: no pipeline of an earlier test in the report."""
    shipper.shutdown(timeout=1)
    lifecycle._closed.clear()
    lifecycle._last = ShutdownReport()
    yield


def _handler(fake: FakeLoki, tmp_path: Path, name: str = "a", **settings: Any) -> LokiHandler:
    """A handler whose batches wait 30 s: only a flush or close sends them during a test."""
    settings = {"spool_dir": str(tmp_path / f"spool-{name}"), "batch_max_wait": 30,
                "shutdown_timeout": 5, **settings}
    return LokiHandler(fake.url, service=f"svc-{name}", **settings)


def _log(handler: LokiHandler, n: int, name: str = "lifecycle") -> None:
    logger = logging.getLogger(f"test.{name}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        for i in range(n):
            logger.info("event %d", i)
    finally:
        logger.removeHandler(handler)


def test_shutdown_delivers_every_handlers_queue_and_reports_nothing_left(
        fake: FakeLoki, tmp_path: Path) -> None:
    first, second = _handler(fake, tmp_path, "a"), _handler(fake, tmp_path, "b")
    _log(first, 30, "a")
    _log(second, 20, "b")
    assert fake.count() == 0  # nothing went by the timer
    report = shipper.shutdown()
    assert fake.count() == 50
    assert isinstance(report, ShutdownReport)
    assert report.left_on_disk == 0 and report.paths == () and report.dropped == 0
    assert report.complete
    assert first.pipeline not in live_pipelines() and second.pipeline not in live_pipelines()


def test_shutdown_with_loki_away_says_what_is_left_on_disk_and_where(
        fake: FakeLoki, tmp_path: Path) -> None:
    handler = _handler(fake, tmp_path, retry_budget=1, backoff_min=0.05)
    fake.stop()
    _log(handler, 25)
    report = shipper.shutdown(timeout=2)
    assert report.left_on_disk == 25
    assert report.paths == (tmp_path / "spool-a",)
    assert not report.complete


def test_shutdown_is_idempotent_and_later_records_go_to_the_spool(
        fake: FakeLoki, tmp_path: Path) -> None:
    handler = _handler(fake, tmp_path)
    _log(handler, 5)
    first = shipper.shutdown()
    assert shipper.shutdown() == first
    _log(handler, 3)  # still attached after shutdown: kept on disk, not lost
    assert shipper.shutdown().left_on_disk == 3
    assert fake.count() == 5


def test_concurrent_shutdowns_from_threads_close_once_and_agree(
        fake: FakeLoki, tmp_path: Path) -> None:
    handler = _handler(fake, tmp_path)
    _log(handler, 40)
    reports: list[ShutdownReport] = []
    threads = [threading.Thread(target=lambda: reports.append(shipper.shutdown()))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(reports) == 4 and len(set(reports)) == 1
    assert fake.count() == 40


@pytest.mark.timeout(30)  # a hang fails here
def test_shutdown_interrupting_a_lock_holder_returns_by_its_deadline_instead_of_hanging(
        fake: FakeLoki, tmp_path: Path) -> None:
    """As when SIGTERM's handler runs on the main thread while that thread is inside the queue's
    lock: the drain cannot proceed until the interrupted code goes on, so shutdown gives up at
    its deadline and says so."""
    handler = _handler(fake, tmp_path)
    _log(handler, 5)
    lock = handler.pipeline._batcher._lock
    with lock:
        report = shipper.shutdown(timeout=0.5)
    assert report.unfinished == 1 and not report.complete
    fake.wait_for_count(5, timeout=10)  # once the lock is free the drain finishes
    assert fake.count() == 5


@pytest.fixture
def default_sigterm() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_hook_is_installed_only_where_sigterm_has_its_default_action(
        fake: FakeLoki, tmp_path: Path, default_sigterm: None) -> None:
    _handler(fake, tmp_path, "a", handle_sigterm=False)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    _handler(fake, tmp_path, "b")
    assert signal.getsignal(signal.SIGTERM) is _on_sigterm

    def app_handler(signum: int, frame: Any) -> None: ...

    signal.signal(signal.SIGTERM, app_handler)
    _handler(fake, tmp_path, "c")
    assert signal.getsignal(signal.SIGTERM) is app_handler  # never replaced


_SCRIPT = """
import logging, os, signal, time
from shipper import LokiHandler
handler = LokiHandler({url!r}, service="script", spool_dir={spool!r}, batch_max_wait=30,
                      handle_sigterm={hook})
logging.basicConfig(level=logging.INFO, handlers=[handler])
for i in range(100):
    logging.info("line %d", i)
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(30)
"""


@pytest.mark.parametrize(("hook", "arrived"), [(True, 100), (False, 0)],
                         ids=["hook", "no-hook"])
def test_plain_script_killed_by_sigterm_delivers_its_queue_through_the_hook(
        fake: FakeLoki, tmp_path: Path, hook: bool, arrived: int) -> None:
    script = _SCRIPT.format(url=fake.url, spool=str(tmp_path / "spool"), hook=hook)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], timeout=60,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == -signal.SIGTERM, proc.stderr  # it still dies by the signal
    assert fake.count() == arrived, proc.stderr


_DIRECT = """
import signal
from shipper.config import ShipperConfig
from shipper.delivery.pipeline import Pipeline
pipeline = Pipeline(ShipperConfig(url={url!r}, service="cli", spool=False))
hook = signal.getsignal(signal.SIGTERM)
print(hook.__module__, hook.__name__)
pipeline.close(1)
"""


def test_a_pipeline_made_without_a_handler_installs_the_sigterm_hook_too(
        fake: FakeLoki) -> None:
    """The sidecar's and the CLI's pipelines are made straight from the engine, which never
    imports shipper.lifecycle: the registry tells lifecycle of every pipeline made."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_DIRECT.format(url=fake.url))],
                          timeout=60, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["shipper.lifecycle", "_on_sigterm"]


# ------------------------------------------------------------------------- ASGI lifespan


async def _lifespan(app: Any, on_send: Any = None) -> list[Message]:
    """Drive one lifespan session as a server does; the messages the app sent back."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    for kind in ("lifespan.startup", "lifespan.shutdown"):
        inbox.put_nowait({"type": kind})
    sent: list[Message] = []

    async def receive() -> Message:
        return await inbox.get()

    async def send(message: Message) -> None:
        if on_send is not None:
            on_send(message)
        sent.append(message)

    await ShipperASGIMiddleware(app)({"type": "lifespan", "asgi": {"version": "3.0"}},
                                     receive, send)
    return sent


def test_lifespan_ships_the_apps_own_shutdown_logs_before_the_server_hears_complete(
        fake: FakeLoki, tmp_path: Path) -> None:
    handler = _handler(fake, tmp_path)
    _log(handler, 10)
    seen_at_complete: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                _log(handler, 1, "app-shutdown")  # "closing the database pool"
                await send({"type": "lifespan.shutdown.complete"})
                return

    def on_send(message: Message) -> None:
        if message["type"] == "lifespan.shutdown.complete":
            seen_at_complete.append(fake.count())

    sent = asyncio.run(_lifespan(app, on_send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete",
                                         "lifespan.shutdown.complete"]
    assert seen_at_complete == [11]
    assert handler.pipeline not in live_pipelines()


async def _django_like(scope: Any, receive: Any, send: Any) -> None:
    raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")


async def _returns_at_once(scope: Any, receive: Any, send: Any) -> None:
    return


async def _reads_then_fails(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    raise RuntimeError("unsupported scope")


@pytest.mark.parametrize("app", [_django_like, _returns_at_once, _reads_then_fails],
                         ids=["raises", "returns", "reads-then-raises"])
def test_lifespan_is_answered_for_an_app_without_lifespan_support(
        fake: FakeLoki, tmp_path: Path, app: Any) -> None:
    handler = _handler(fake, tmp_path)
    _log(handler, 7)
    sent = asyncio.run(_lifespan(app))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete",
                                         "lifespan.shutdown.complete"]
    assert fake.count() == 7


def test_failed_startup_of_a_lifespan_app_is_passed_on_unchanged(
        fake: FakeLoki, tmp_path: Path) -> None:
    handler = _handler(fake, tmp_path)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        raise RuntimeError("no database")

    with pytest.raises(RuntimeError, match="no database"):
        asyncio.run(_lifespan(app))
    assert handler.pipeline in live_pipelines()  # startup failed: no shutdown of ours
    handler.close()


def test_lifespan_passes_through_untouched_with_close_on_shutdown_off(
        fake: FakeLoki, tmp_path: Path) -> None:
    handler = _handler(fake, tmp_path)
    scopes: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope["type"])

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        raise AssertionError(message)

    middleware = ShipperASGIMiddleware(app, close_on_shutdown=False)
    asyncio.run(middleware({"type": "lifespan"}, receive, send))
    assert scopes == ["lifespan"]
    assert handler.pipeline in live_pipelines()
    handler.close()
