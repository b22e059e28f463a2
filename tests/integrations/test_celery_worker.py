"""shipper.integrations.celery under a real Celery prefork worker (kombu's filesystem
transport as the broker), stopped with SIGTERM (warm shutdown), counted exactly in the fake
Loki. The worker batches with ``batch_max_wait=30s``: what arrives got there because each pool
child delivered on ``worker_process_shutdown`` before its ``os._exit``."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipper.context import log_context
from shipper.delivery.spool import spool_status
from tests.support.fakeloki import FakeLoki, Stored
from tests.support.servers._run import BIN, events, metadata_of, running, server_env, trace_ids

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90),
              pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")]

BURST = 30


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeLoki]:
    with FakeLoki(rate_limit=False) as loki:
        yield loki


@pytest.fixture(scope="module")
def worker_run(fake: FakeLoki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One worker: a burst of tasks and a failing task (some sent from a traced request),
    then SIGTERM once every task is done."""
    from tests.support.servers.celery_app import make_app

    tmp = tmp_path_factory.mktemp("celery")
    broker = tmp / "broker"
    producer = make_app(str(broker))
    service = f"tasks-{uuid.uuid4().hex[:8]}"
    env = server_env(fake.url, service, tmp, DEPLOY_BROKER_DIR=str(broker))
    argv = [str(BIN / "celery"), "-A", "tests.support.servers.celery_app", "worker",
            "-P", "prefork", "-c", "2", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "--loglevel", "INFO"]
    with running(argv, env, tmp / "worker.log") as worker:
        plain = [producer.send_task("deploy.work", args=[n]).id for n in range(BURST)]
        with log_context(trace_id="req-7f3a", actor="USER", actor_id="u-42"):
            traced = producer.send_task("deploy.work", args=[BURST]).id
            flaky = producer.send_task("deploy.flaky").id
        done = broker / "done"
        deadline = time.monotonic() + 60
        while len(list(done.iterdir())) < BURST + 2 and time.monotonic() < deadline:
            assert worker.proc.poll() is None, worker.output()
            time.sleep(0.05)
        assert len(list(done.iterdir())) == BURST + 2, worker.output()
        time.sleep(0.3)  # the flaky task's last attempt writes its marker just before failing
        code = worker.stop(signal.SIGTERM)
        output = worker.output()
    return {"service": service, "code": code, "output": output, "plain": plain,
            "traced": traced, "flaky": flaky, "spool": tmp / "spool"}


def _events(fake: FakeLoki, run: dict[str, object], kind: str) -> list[Stored]:
    return events(fake, str(run["service"]), kind)


def test_warm_shutdown_delivers_every_task_event_of_every_pool_child(
        fake: FakeLoki, worker_run: dict[str, object]) -> None:
    assert worker_run["code"] == 0, worker_run["output"]
    work = _events(fake, worker_run, "WORK")
    succeeded = _events(fake, worker_run, "TASK_SUCCEEDED")
    assert len(work) == BURST + 1, worker_run["output"]
    assert len(succeeded) == BURST + 1
    assert (spool_status(Path(str(worker_run["spool"]))).records or 0) == 0


def test_task_events_carry_task_id_as_trace_and_name_retries_duration(
        fake: FakeLoki, worker_run: dict[str, object]) -> None:
    plain = set(worker_run["plain"])  # type: ignore[call-overload]
    by_task = {metadata_of(s)["task_id"]: s for s in _events(fake, worker_run, "TASK_SUCCEEDED")}
    missing = plain - set(by_task)
    assert not missing, (sorted(missing), sorted(by_task), str(worker_run["output"])[-4000:])
    for task_id in plain:
        stored = by_task[task_id]
        meta = metadata_of(stored)
        assert dict(stored.metadata)["trace_id"] == task_id
        assert dict(stored.labels)["level"] == "INFO"
        assert meta["task"] == "deploy.work" and meta["retries"] == 0
        assert isinstance(meta["duration_ms"], float) and meta["duration_ms"] >= 0
    # the task's own records carry the same trace
    work_traces = set(trace_ids(_events(fake, worker_run, "WORK")))
    assert plain <= work_traces


def test_task_sent_from_a_request_carries_its_request_id_and_user(
        fake: FakeLoki, worker_run: dict[str, object]) -> None:
    traced = [s for s in fake.stored() if dict(s.metadata).get("trace_id") == "req-7f3a"
              and dict(s.labels).get("service_name") == worker_run["service"]]
    kinds = sorted(dict(s.labels)["type"] for s in traced)
    assert kinds == ["TASK_FAILED", "TASK_RETRY", "TASK_RETRY", "TASK_SUCCEEDED", "WORK"]
    assert {dict(s.labels)["actor"] for s in traced} == {"USER"}
    assert {dict(s.metadata)["actor_id"] for s in traced} == {"u-42"}
    ids = {metadata_of(s)["task_id"] for s in traced}
    assert ids == {worker_run["traced"], worker_run["flaky"]}


def test_failing_task_logs_each_retry_then_the_failure_with_its_exception(
        fake: FakeLoki, worker_run: dict[str, object]) -> None:
    retries = sorted(_events(fake, worker_run, "TASK_RETRY"), key=lambda s: s.ts)
    assert [metadata_of(s)["retries"] for s in retries] == [0, 1]
    assert {dict(s.labels)["level"] for s in retries} == {"WARNING"}
    assert "upstream said no (attempt 1)" in metadata_of(retries[0])["reason"]
    [failed] = _events(fake, worker_run, "TASK_FAILED")
    line = json.loads(failed.line)
    assert dict(failed.labels)["level"] == "ERROR"
    assert line["metadata"]["task"] == "deploy.flaky" and line["metadata"]["retries"] == 2
    assert line["metadata"]["error_type"] == "ValueError"
    assert "ValueError: upstream said no (attempt 3)" in line["exception"]
    assert "Traceback" in line["exception"]
    for stored in [*retries, failed]:
        assert metadata_of(stored)["duration_ms"] >= 0
