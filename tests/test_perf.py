from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from shipper.context import log_context
from shipper.event import Level
from shipper.perf import log_operation, log_performance
from shipper.testing import LogCapture


class FakeClock:
    """Each call advances by ``step`` seconds."""

    def __init__(self, step: float) -> None:
        self.now = 100.0
        self.step = step

    def __call__(self) -> float:
        value = self.now
        self.now += self.step
        return value


def test_decorated_function_logs_duration_and_success(logs: LogCapture) -> None:
    @log_performance("checkout.total", threshold_ms=500, clock=FakeClock(0.120))
    def total(a: int, b: int) -> int:
        return a + b

    assert total(2, b=3) == 5
    (event,) = logs.from_logger("shipper.perf")
    assert (event.type, event.level, event.logger) == ("PERFORMANCE", Level.INFO, "shipper.perf")
    assert event.metadata["name"] == "checkout.total"
    assert event.metadata["duration_ms"] == pytest.approx(120.0)
    assert event.metadata["success"] is True
    assert event.metadata["slow"] is False
    assert event.metadata["threshold_ms"] == 500.0
    assert event.exception is None


def test_slow_call_is_a_warning(logs: LogCapture) -> None:
    @log_performance(threshold_ms=1000, clock=FakeClock(1.5))
    def work() -> str:
        return "done"

    assert work() == "done"
    (event,) = logs.from_logger("shipper.perf")
    assert event.level is Level.WARNING
    assert event.metadata["slow"] is True
    assert event.metadata["name"].endswith("test_slow_call_is_a_warning.<locals>.work")


def test_failure_is_an_error_with_the_exception_and_is_reraised(logs: LogCapture) -> None:
    class PaymentDeclined(Exception):
        pass

    @log_performance("charge")
    def charge() -> None:
        raise PaymentDeclined("card declined")

    with pytest.raises(PaymentDeclined, match="card declined") as raised:
        charge()
    assert raised.value.__traceback__ is not None
    (event,) = logs.from_logger("shipper.perf")
    assert event.level is Level.ERROR
    assert event.metadata["success"] is False
    assert event.metadata["error_type"] == "PaymentDeclined"
    assert event.exception is not None and "PaymentDeclined: card declined" in event.exception


def test_async_functions_are_timed_and_stay_coroutine_functions(logs: LogCapture) -> None:
    @log_performance("fetch", threshold_ms=10, clock=FakeClock(0.050))
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    assert asyncio.iscoroutinefunction(fetch)
    assert fetch.__name__ == "fetch"
    assert asyncio.run(fetch(21)) == 42
    (event,) = logs.from_logger("shipper.perf")
    assert event.level is Level.WARNING and event.metadata["duration_ms"] == pytest.approx(50.0)


def test_async_failure_is_logged_and_reraised(logs: LogCapture) -> None:
    @log_performance
    async def boom() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError):
        asyncio.run(boom())
    (event,) = logs.from_logger("shipper.perf")
    assert event.level is Level.ERROR and event.metadata["error_type"] == "KeyError"


def test_bare_decorator_keeps_name_doc_and_return_value(logs: LogCapture) -> None:
    @log_performance
    def documented() -> list[int]:
        """Docs."""
        return [1]

    assert documented.__doc__ == "Docs." and documented.__name__ == "documented"
    assert documented() == [1]
    assert logs.from_logger("shipper.perf")[0].metadata["threshold_ms"] is None


def test_events_carry_the_request_context(logs: LogCapture) -> None:
    @log_performance("in_request")
    def work() -> None:
        return None

    with log_context(trace_id="req-1", actor="USER", actor_id="u1"):
        work()
    (event,) = logs.from_logger("shipper.perf")
    assert (event.trace_id, event.actor.value, event.actor_id) == ("req-1", "USER", "u1")


def test_log_operation_times_a_block_with_added_metadata(logs: LogCapture) -> None:
    with log_operation("import_products", metadata={"file": "a.csv"},
                       clock=FakeClock(0.2)) as op:
        op.metadata["rows"] = 3
    (event,) = logs.from_logger("shipper.perf")
    assert event.type == "OPERATION" and event.level is Level.INFO
    assert event.metadata["file"] == "a.csv" and event.metadata["rows"] == 3
    assert event.metadata["name"] == "import_products"
    assert event.metadata["duration_ms"] == pytest.approx(200.0)


def test_log_operation_failure_is_logged_and_propagates(logs: LogCapture) -> None:
    with pytest.raises(ZeroDivisionError), log_operation("divide", type="math_op"):
        _ = 1 / 0
    (event,) = logs.from_logger("shipper.perf")
    assert (event.type, event.level) == ("MATH_OP", Level.ERROR)
    assert event.exception is not None and "ZeroDivisionError" in event.exception


def test_log_operation_as_async_context_manager_slow(logs: LogCapture) -> None:
    async def main() -> None:
        async with log_operation("sync_feed", threshold_ms=100, clock=FakeClock(0.3)):
            await asyncio.sleep(0)

    asyncio.run(main())
    (event,) = logs.from_logger("shipper.perf")
    assert event.level is Level.WARNING and event.metadata["slow"] is True


def test_cancellation_is_a_warning_and_propagates(logs: LogCapture) -> None:
    async def main() -> None:
        async with log_operation("long_poll"):
            await asyncio.sleep(10)

    async def runner() -> None:
        task = asyncio.create_task(main())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(runner())
    (event,) = logs.from_logger("shipper.perf")
    assert event.level is Level.WARNING and event.metadata["cancelled"] is True


def test_custom_logger_and_level(logs: LogCapture) -> None:
    with log_operation("nightly", logger="jobs", level=logging.DEBUG, actor="SYSTEM"):
        pass
    (event,) = logs.from_logger("jobs")
    assert (event.logger, event.level, event.actor.value) == ("jobs", Level.DEBUG, "SYSTEM")


def test_logging_trouble_never_changes_the_wrapped_code(logs: LogCapture) -> None:
    class Broken(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raise RuntimeError("handler broken")

        def handleError(self, record: logging.LogRecord) -> None:
            raise RuntimeError("handler broken")

    broken = Broken()
    perf_logger = logging.getLogger("shipper.perf")
    perf_logger.addHandler(broken)
    try:
        @log_performance("fragile")
        def fragile() -> int:
            return 7

        assert fragile() == 7
    finally:
        perf_logger.removeHandler(broken)


def test_bad_arguments_raise_errors_naming_them() -> None:
    with pytest.raises(ValueError, match="threshold_ms"):
        log_performance("x", threshold_ms=-1)
    with pytest.raises(ValueError, match="name"):
        log_operation("")
    with pytest.raises(TypeError, match="metadata"):
        log_operation("x", metadata=["a"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="logger"):
        log_performance("x", logger="shipper.internal")

    def gen() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        log_performance("g")(gen)
