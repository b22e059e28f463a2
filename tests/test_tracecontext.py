"""The W3C trace context readers: ``traceparent`` headers as the spec reads them (and as an
attacker writes them), ids given as text, and the active span's ids without OpenTelemetry
imported."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipper.tracecontext import hex_id, span_ids, traceparent_ids

REPO = Path(__file__).resolve().parents[1]
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.mark.parametrize("header", [
    f"00-{TRACE}-{PARENT}-01",
    f"00-{TRACE}-{PARENT}-00",
    f"  00-{TRACE}-{PARENT}-01\t",               # optional white space around a header value
    f"00-{TRACE}-{PARENT}-01".encode("latin-1"),  # ASGI gives bytes
    f"01-{TRACE}-{PARENT}-01",                   # a later version: the first 55 characters
    f"cc-{TRACE}-{PARENT}-09-what-comes-next",   # a later version with more after a dash
])
def test_valid_traceparent_gives_its_trace_and_parent_ids(header: str | bytes) -> None:
    assert traceparent_ids(header) == (TRACE, PARENT)


@pytest.mark.parametrize("header", [
    None,
    "",
    "00",
    f"ff-{TRACE}-{PARENT}-01",                       # version ff is never valid
    f"00-{TRACE}-{PARENT}-01-extra",                 # version 00 is exactly 55 characters
    f"01-{TRACE}-{PARENT}-01extra",                  # a later version: "-" or the end after 55
    f"00-{'0' * 32}-{PARENT}-01",                    # all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01",                     # all-zero parent id
    f"00-{TRACE.upper()}-{PARENT}-01",               # upper-case hex is not the format
    f"0-{TRACE}-{PARENT}-01",
    f"00-{TRACE[:-1]}-{PARENT}-01",
    f"00-{TRACE}x-{PARENT}-01",
    f"00-{TRACE}-{PARENT}-1",
    f"00-{TRACE}-{PARENT}-zz",
    f"00_{TRACE}_{PARENT}_01",
    f"00-{TRACE}-{PARENT}-01\n00-{TRACE}-{PARENT}-01",
    f"00-{TRACE}-{PARENT}-01,00-{TRACE}-{PARENT}-01",  # two headers joined by the server
    f"00-{TRACE}-{PARENT}-01\x00",
    "00-" + "a" * 100_000 + f"-{PARENT}-01",       # huge
    f"cc-{TRACE}-{PARENT}-01-" + "x" * 1000,       # a later version, far too long
    "00-\u0660" * 20,                                # digits of another script
])
def test_malformed_forged_or_huge_traceparent_is_no_trace(header: str | None) -> None:
    assert traceparent_ids(header) is None


@given(st.one_of(st.text(max_size=80), st.binary(max_size=80),
                 st.from_regex(r"[0-9a-fA-F]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}.{0,5}",
                               fullmatch=True)))
def test_any_header_is_read_without_raising_and_only_lower_hex_ids_come_out(
    header: str | bytes,
) -> None:
    ids = traceparent_ids(header)
    if ids is not None:
        trace_id, parent_id = ids
        assert len(trace_id) == 32 and len(parent_id) == 16
        assert set(trace_id + parent_id) <= set("0123456789abcdef")
        assert trace_id != "0" * 32 and parent_id != "0" * 16


@pytest.mark.parametrize(("value", "digits", "expected"), [
    (TRACE, 32, TRACE),
    (TRACE.upper(), 32, TRACE),
    (PARENT, 16, PARENT),
    ("0", 32, None),            # opentelemetry-instrumentation-logging's "no span"
    ("0", 16, None),
    ("0" * 32, 32, None),
    ("0" * 16, 16, None),
    (TRACE, 16, None),
    (TRACE[:-1] + "g", 32, None),
    (int(TRACE, 16), 32, None),
    (None, 32, None),
    (b"4bf92f3577b34da6a3ce929d0e0e4736", 32, None),
])
def test_hex_id_takes_only_real_ids(value: object, digits: int, expected: str | None) -> None:
    assert hex_id(value, digits) == expected


class _Context:
    def __init__(self, trace_id: object, span_id: object) -> None:
        self.trace_id, self.span_id = trace_id, span_id


@pytest.mark.parametrize(("trace_id", "span_id", "expected"), [
    (1, 2, ("0" * 31 + "1", "0" * 15 + "2")),
    ((1 << 128) - 1, (1 << 64) - 1, ("f" * 32, "f" * 16)),
    (0, 2, None),
    (1, 0, None),
    (1 << 128, 2, None),        # would write 33 digits
    (1, 1 << 64, None),
    (-1, 2, None),
    ("1", 2, None),
    (1.0, 2, None),
])
def test_span_ids_are_fixed_width_hex_or_none(trace_id: object, span_id: object,
                                              expected: tuple[str, str] | None) -> None:
    assert span_ids(_Context(trace_id, span_id)) == expected


def test_span_ids_of_an_object_without_ids_is_none() -> None:
    assert span_ids(object()) is None


_HIDE_OTEL = textwrap.dedent("""
    import importlib.abc, sys

    class HideOpenTelemetry(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, HideOpenTelemetry())
""")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                          text=True, env=env, timeout=120, cwd=str(REPO))


def test_without_opentelemetry_installed_records_ship_and_nothing_tries_to_import_it() -> None:
    result = _run(_HIDE_OTEL + textwrap.dedent("""
        import logging
        try:
            import opentelemetry.trace
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("opentelemetry was not hidden")
        from shipper.testing import capture_logs
        import shipper.integrations.asgi, shipper.integrations.wsgi

        with capture_logs() as logs:
            logging.getLogger("app").warning("no tracing here")
        (event,) = logs.events
        assert event.trace_id is None and event.span_id is None, event
        assert not [m for m in sys.modules if m.startswith("opentelemetry")], sys.modules
        print("ok")
    """))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_installed_but_unused_opentelemetry_is_never_imported_by_shipper() -> None:
    result = _run(textwrap.dedent("""
        import logging, sys
        import opentelemetry  # installed: importable
        del sys.modules["opentelemetry"]
        from shipper.testing import capture_logs
        from shipper import LokiHandler
        import shipper.integrations.asgi, shipper.integrations.wsgi

        with capture_logs() as logs:
            logging.getLogger("app").warning("no tracing here")
        assert logs.events[0].trace_id is None
        loaded = [m for m in sys.modules if m.startswith("opentelemetry")]
        assert not loaded, loaded
        print("ok")
    """))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
