"""Moving from python-logging-loki and loki-logger-handler (docs/migrating.md): their README
calls work as the page converts them, the arguments that map cleanly are taken, and every
other argument of theirs is refused, naming it and what to write instead."""

from __future__ import annotations

import base64
import dataclasses
import inspect
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipper import LokiHandler
from shipper.compat import translate_arguments
from shipper.config import ConfigError, ShipperConfig
from tests.support import hostile
from tests.support.fakeloki import FakeLoki
from tests.test_handler import fake

__all__ = ["fake"]  # the fixture of tests/test_handler.py, used here too


@pytest.fixture()
def attach(tmp_path: Path) -> Iterator[Any]:
    """Adds a handler to a fresh logger of the given name (made unique); closes it after."""
    made: list[tuple[logging.Logger, LokiHandler]] = []

    def attach(handler: LokiHandler, name: str) -> logging.Logger:
        logger = logging.getLogger(f"{name}.{uuid.uuid4().hex[:8]}")
        logger.propagate = False
        logger.addHandler(handler)
        made.append((logger, handler))
        return logger

    yield attach
    for logger, handler in made:
        logger.removeHandler(handler)
        handler.close()


def _quick(tmp_path: Path) -> dict[str, Any]:
    return {"spool": False, "batch_max_wait": 0.05, "spool_dir": str(tmp_path)}


def _entries(fake: FakeLoki) -> list[tuple[dict[str, str], dict[str, Any], dict[str, str]]]:
    return [(dict(s.labels), json.loads(s.line), dict(s.metadata)) for s in fake.stored()]


def test_python_logging_loki_readme_call_ships_with_its_tags_and_basic_auth(
        fake: FakeLoki, attach: Any, tmp_path: Path) -> None:
    handler = LokiHandler(
        url=fake.url + "/loki/api/v1/push",
        tags={"application": "my-app"},
        auth=("username", "password"),
        version="1",
        **_quick(tmp_path),
    )
    logger = attach(handler, "my-logger")
    logger.error("Something happened", extra={"tags": {"service": "my-service"}})
    assert handler.flush(timeout=10)
    [(labels, line, meta)] = _entries(fake)
    assert (labels["service_name"], labels["level"]) == ("my-app", "ERROR")
    assert line == {"message": "Something happened", "metadata": {"service": "my-service"}}
    assert meta["logger"] == logger.name
    [push] = [r for r in fake.requests if r.path.endswith("/push")]
    auth = {k.lower(): v for k, v in push.headers.items()}["authorization"]
    assert auth == "Basic " + base64.b64encode(b"username:password").decode()


def test_loki_logger_handler_readme_calls_ship_labels_extras_and_loki_metadata(
        fake: FakeLoki, attach: Any, tmp_path: Path) -> None:
    handler = LokiHandler(
        url=fake.url + "/loki/api/v1/push",
        labels={"application": "Test", "environment": "Develop"},
        label_keys={},
        timeout=10,
        **_quick(tmp_path),
    )
    logger = attach(handler, "custom_logger")
    logger.setLevel(logging.DEBUG)
    logger.debug("Debug message", extra={"custom_field": "custom_value"})
    logger.info("User acction", extra={"loki_metadata": {"user_id": 12345, "operation": "update",
                                                         "status": "success"},
                                       "trace_id": "000-000000-0000"})
    assert handler.flush(timeout=10)
    by_message = {line["message"]: (labels, line, meta) for labels, line, meta in _entries(fake)}
    labels, line, _ = by_message["Debug message"]
    assert (labels["service_name"], labels["env"], labels["level"]) == ("Test", "Develop",
                                                                        "DEBUG")
    assert line["metadata"] == {"custom_field": "custom_value"}
    labels, line, meta = by_message["User acction"]
    assert meta["trace_id"] == "000-000000-0000"
    assert line["metadata"] == {"user_id": 12345, "operation": "update", "status": "success"}


def test_loki_logger_handlers_positional_labels_are_read_as_labels(
        fake: FakeLoki, attach: Any, tmp_path: Path) -> None:
    handler = LokiHandler(fake.url, {"application": "Test"}, **_quick(tmp_path))
    assert handler.config.service == "Test"
    handler.close()


def test_loki_logger_handlers_additional_headers_reach_loki(
        fake: FakeLoki, attach: Any, tmp_path: Path) -> None:
    handler = LokiHandler(url=fake.url + "/loki/api/v1/push", labels={"application": "Test"},
                          additional_headers={"X-Team": "payments"}, **_quick(tmp_path))
    attach(handler, "headers").warning("with a header")
    assert handler.flush(timeout=10)
    [push] = [r for r in fake.requests if r.path.endswith("/push")]
    assert {k.lower(): v for k, v in push.headers.items()}["x-team"] == "payments"
    [(_, line, _)] = _entries(fake)
    assert line["message"] == "with a header"


def test_compressed_maps_to_the_gzip_encoding() -> None:
    assert translate_arguments({"compressed": True}, None, None)[0] == {"encoding": "json+gzip"}
    assert translate_arguments({"compressed": False}, None, None)[0] == {"encoding": "json"}
    with pytest.raises(ConfigError, match=r"compressed: .*encoding="):
        translate_arguments({"compressed": True, "encoding": "protobuf"}, None, None)


class _Unreadable(dict[str, str]):
    """A mapping whose items cannot be read."""

    def items(self) -> Any:
        raise RuntimeError("items refused")


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"tags": {"application": "my-app", "region": "eu"}},
     r"tags: shipper's labels are service_name, env, level, actor and type.*'region' cannot "
     r"be one.*metadata"),
    ({"labels": {"team": "x"}}, r"labels: .*'team'"),
    ({"tags": "application=my-app"}, r"tags: expected a mapping"),
    ({"tags": {"application": "a"}, "service": "b"}, r"tags: .*service.*give it once"),
    ({"tags": {"application": {"name": "a"}}}, r"tags: the service must be text, got dict"),
    ({"tags": {hostile.BadStr(): "x"}}, r"tags: .*'<BadStr>' cannot be one"),
    ({"tags": _Unreadable()}, r"tags: cannot read it as a mapping \(RuntimeError\)"),
    ({"label_keys": {"user": "user"}}, r"label_keys: .*remove label_keys="),
    ({"version": "0"}, r"version: .*/loki/api/v1/push.*remove version="),
    ({"auth": "user:pw"}, r"auth: expected a \(user, password\) pair"),
    ({"auth": ("u", "p"), "username": "v"}, r"auth: username is given twice"),
    ({"message_in_json_format": False}, r"message_in_json_format: .*always a JSON object"),
    ({"default_formatter": object()}, r"default_formatter: .*ProcessorFormatter"),
    ({"enable_self_errors": True}, r"enable_self_errors: .*stats\(\)"),
    ({"enable_structured_loki_metadata": True}, r"enable_structured_loki_metadata: "),
    ({"loki_metadata": {"service": "x"}}, r"loki_metadata: .*filter"),
    ({"loki_metadata_keys": ["trace_id"]}, r"loki_metadata_keys: .*extra="),
], ids=lambda v: str(v)[:40] if isinstance(v, dict) else "")
def test_arguments_without_a_clean_equivalent_are_refused_saying_what_to_write(
        kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        LokiHandler("http://loki.test:3100", spool=False, **kwargs)


def _sample(name: str) -> Any:
    """A value an app gives that argument (not its default)."""
    return {"tags": {"application": "a"}, "labels": {"application": "a"}, "auth": ("u", "p"),
            "version": "1", "label_keys": {"k": "k"}, "additional_headers": {"X-A": "1"},
            "compressed": True, "timeout": 10, "message_in_json_format": True,
            "default_formatter": logging.Formatter(), "enable_self_errors": True,
            "enable_structured_loki_metadata": True, "loki_metadata": {"a": 1},
            "loki_metadata_keys": ["a"]}.get(name, "x")


@pytest.mark.parametrize("where", ["logging_loki:LokiHandler",
                                   "loki_logger_handler.loki_logger_handler:LokiLoggerHandler"])
def test_every_argument_of_the_real_handlers_is_taken_or_refused_by_name(where: str) -> None:
    """The signatures of the installed libraries: no argument of theirs falls through to
    'unknown setting'."""
    module_name, _, class_name = where.partition(":")
    module = pytest.importorskip(module_name)
    settings = {f.name for f in dataclasses.fields(ShipperConfig)} | {"headers"}
    params = [p for p in inspect.signature(getattr(module, class_name)).parameters
              if p not in ("self", "url")]
    assert len(params) >= 3
    for name in params:
        try:
            out, _, _ = translate_arguments({name: _sample(name)}, None, None)
        except ConfigError as exc:
            assert str(exc).startswith(f"{name}: "), exc
        else:
            assert set(out) <= settings, (name, out)
