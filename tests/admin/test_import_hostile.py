"""`shipper import` against files an attacker or a careless export would give it: formulas
neutralised by `shipper export`, fields of any size, other encodings and bytes that do not
decode, broken CSV, NUL bytes, a million columns, a 100 MB line, deep JSON, times out of range.
Whatever one row holds, it costs that row alone: refused with a reason naming its line and byte
offset, kept as read in the refused file, and the rows around it imported."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipper.cli.main import main
from tests.admin import test_import
from tests.admin.test_import import NOW, run, stored
from tests.support.fakeloki import FakeLoki

NS = 1_000_000_000
WHEN = (NOW - dt.timedelta(minutes=5)).isoformat().replace("+00:00", "Z")

#: import's own fake Loki, with LOKI_URL set
fake = test_import.fake


def refused(path: Path) -> list[dict[str, Any]]:
    rows = Path(f"{path}.refused.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in rows]


def csv_bytes(*rows: bytes, header: bytes = b"createdAt,message") -> bytes:
    return b"\n".join([header, *rows]) + b"\n"


def row(message: bytes | str) -> bytes:
    text = message if isinstance(message, bytes) else message.encode()
    return WHEN.encode() + b"," + text


#: where the second row starts when the first is row("before")
SECOND = len(b"createdAt,message\n") + len(row("before")) + 1


# ----------------------------------------------------------------------- export, then import


def test_an_exported_csv_imports_back_to_the_text_it_was(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Export neutralises formulas with a quote; import takes exactly that quote away again,
    in every column, mapped or kept in the metadata."""
    texts = ["=cmd|' /C calc'!A0", "@SUM(1+1)", "+1+1", "-2+3", " =1", "\t=1", "'=1",
             "''@x", "'plain", "plain", "-5"]
    ts = int((NOW - dt.timedelta(minutes=5)).timestamp()) * NS
    for i, text in enumerate(texts):
        fake.add({"service_name": "shop", "env": "prod", "level": "INFO", "actor": "USER",
                  "type": "VIEW"}, ts + i, json.dumps({"message": text, "metadata": {"i": i}}),
                 {"actor_id": text, "logger": text})
    out = tmp_path / "events.csv"
    assert main(["export", "--service", "shop", "--since", "1h", "-o", str(out)]) == 0
    cells = out.read_text(encoding="utf-8")
    assert "\n=cmd" not in cells and ",=cmd" not in cells and ",@SUM" not in cells
    code, _, err = run(capsys, "import", str(out), "--service", "restored", "--no-progress")
    assert code == 0, err
    back = {}
    for entry in fake.stored():
        if dict(entry.labels)["service_name"] == "restored":
            line = json.loads(entry.line)
            back[line["metadata"]["i"]] = (line["message"], dict(entry.metadata)["actor_id"],
                                           line["metadata"]["logger"])
    # the message and actor_id columns, and logger, kept in the metadata: each as it was
    assert back == {i: (text, text, text) for i, text in enumerate(texts)}


# ----------------------------------------------------------------------- sizes


def test_a_csv_field_over_131072_characters_imports_truncated_as_any_event(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "big.csv"
    path.write_bytes(csv_bytes(row("before"), row("x" * 1_000_000), row("after")))
    code, _, err = run(capsys, "import", str(path), "--service", "shop", "--format", "json")
    assert code == 0, err
    lines = {json.loads(s.line)["message"][:6]: s.line for s in fake.stored()}
    assert set(lines) == {"before", "xxxxxx", "after"}
    big = json.loads(lines["xxxxxx"])
    assert big["truncated"] is True and "truncated by shipper" in big["message"]
    assert len(lines["xxxxxx"].encode()) <= 256 * 1024


@pytest.mark.slow
def test_a_json_line_of_100_mb_imports_truncated_and_its_neighbours_too(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "huge.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps({"createdAt": WHEN, "message": "before"}) + "\n")
        fh.write(json.dumps({"createdAt": WHEN, "message": "x" * 100_000_000}) + "\n")
        fh.write(json.dumps({"createdAt": WHEN, "message": "after"}) + "\n")
    code, out, err = run(capsys, "import", str(path), "--service", "shop", "--format", "json")
    assert code == 0, err  # not "queue_full" at that row on every run
    assert json.loads(out)["imported"] == 3
    messages = sorted(json.loads(s.line)["message"][:6] for s in fake.stored())
    assert messages == ["after", "before", "xxxxxx"]


def test_a_row_of_a_million_cells_is_refused_in_a_short_sentence(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "wide.csv"
    wide = row("wide") + b",x" * 1_000_000
    path.write_bytes(csv_bytes(row("before"), wide, row("after")))
    code, out, _ = run(capsys, "import", str(path), "--service", "shop", "--format", "json")
    summary = json.loads(out)
    assert code == 1 and (summary["imported"], summary["refused"]) == (2, 1)
    reason = summary["reasons"]["bad_row"][1]
    assert reason == (f"row 2: line 3, byte offset {SECOND}: 1000002 cells but the header "
                      "has 2 columns (the first extra cell: 'x')")
    (kept,) = refused(path)
    assert kept["_shipper_line"] == wide.decode() + "\n"  # the row as read, not lost


def test_a_header_of_a_million_columns_costs_a_short_row_nothing(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    header = b"createdAt,message," + b",".join(b"c%d" % i for i in range(1_000_000))
    path = tmp_path / "wide-header.csv"
    path.write_bytes(csv_bytes(*(row(f"short {i}") for i in range(300)),
                               row("full") + b",v" * 1_000_000, header=header))
    code, out, err = run(capsys, "import", str(path), "--service", "shop", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["imported"] == 301
    full = json.loads(next(s.line for s in fake.stored() if '"full' in s.line))
    assert full["truncated"] is True  # a million metadata values: cut to max_line_bytes


def test_a_header_without_a_time_column_names_a_few_columns_not_a_million(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "no-time.csv"
    path.write_bytes(b",".join(b"c%d" % i for i in range(1_000_000)) + b"\n1,2\n")
    code, _, err = run(capsys, "import", str(path), "--service", "shop")
    assert code == 2 and "no time column" in err and "c19 and 999980 more" in err
    assert len(err) < 500


# ----------------------------------------------------------------------- encodings


def test_a_latin_1_file_is_refused_row_by_row_then_imported_with_its_encoding(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "legacy.csv"
    path.write_bytes(csv_bytes(row("before"), row("caf\xe9 cr\xe8me".encode("latin-1")),
                               row("after")))
    code, out, _ = run(capsys, "import", str(path), "--service", "shop", "--format", "json")
    summary = json.loads(out)
    assert code == 1 and (summary["imported"], summary["refused"]) == (2, 1)
    count, reason = summary["reasons"]["bad_encoding"]
    assert count == 1 and reason == (
        f"row 2: line 3, byte offset {SECOND + len(WHEN) + 4}: not valid utf-8 (byte 0xe9); if "
        "the file is in another encoding, name it with --encoding (e.g. --encoding latin-1)")
    assert not any("\ufffd" in s.line for s in fake.stored())
    (kept,) = refused(path)
    assert kept["_shipper_line"] == f"{WHEN},caf\\xe9 cr\\xe8me\n"  # the bytes, escaped
    assert kept["_shipper_row"] == 2

    # the same file with its encoding: a checkpoint of another encoding is another import
    code, _, err = run(capsys, "import", str(path), "--service", "shop", "--encoding", "latin-1")
    assert code == 2 and "encoding" in err and "--restart" in err
    code, out, err = run(capsys, "import", str(path), "--service", "shop", "--encoding",
                         "latin-1", "--restart", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["imported"] == 3 and "café crème" in stored(fake)


def test_json_lines_that_do_not_decode_are_refused_each_with_its_place(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    good = json.dumps({"createdAt": WHEN, "message": "good"}).encode()
    bad = json.dumps({"createdAt": WHEN, "message": "@@"}).encode().replace(b"@@", b"\xff\xfe")
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join([good, bad, good.replace(b"good", b"also good")]) + b"\n")
    code, out, _ = run(capsys, "import", str(path), "--service", "shop", "--format", "json")
    assert code == 1 and json.loads(out)["imported"] == 2
    (kept,) = refused(path)
    offset = len(good) + 1 + bad.index(b"\xff")
    assert kept["_shipper_reason"].startswith(
        f"row 2: line 2, byte offset {offset}: not valid utf-8 (byte 0xff)")
    assert "\\xff\\xfe" in kept["_shipper_line"]


@pytest.mark.parametrize("encoding", [None, "utf-8-sig", "utf8"])
def test_a_utf_8_byte_order_mark_is_skipped(fake: FakeLoki, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            encoding: str | None) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + csv_bytes(row("caf\u00e9")))
    flags = ["--encoding", encoding] if encoding else []
    code, _, err = run(capsys, "import", str(path), "--service", "shop", *flags)
    assert code == 0, err
    assert list(stored(fake)) == ["café"]


@pytest.mark.parametrize(("encoding", "message"), [
    ("no-such-codec", "--encoding 'no-such-codec': no such encoding"),
    ("utf-16", "convert the file first, e.g. iconv -f utf-16 -t utf-8"),
    ("rot13", "convert the file first"),
    ("unicode_escape", "convert the file first"),
])
def test_an_encoding_that_cannot_read_lines_is_a_usage_error(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str], encoding: str,
    message: str,
) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(csv_bytes(row("x")))
    code, _, err = run(capsys, "import", str(path), "--service", "shop", "--encoding", encoding)
    assert code == 2 and message in err and "Traceback" not in err
    assert fake.stored() == []


def test_a_header_that_does_not_decode_is_a_usage_error_naming_it(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(csv_bytes(row("x"), header=b"createdAt,m\xe9ssage"))
    code, _, err = run(capsys, "import", str(path), "--service", "shop")
    assert code == 2
    assert "the header: line 1, byte offset 11: not valid utf-8 (byte 0xe9)" in err


# ----------------------------------------------------------------------- broken rows


def test_a_broken_csv_row_is_refused_with_its_line_and_the_others_imported(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "broken.csv"
    path.write_bytes(csv_bytes(row("before"), row("bro\rken"), row("after")))
    code, out, err = run(capsys, "import", str(path), "--service", "shop", "--format", "json")
    assert code == 1 and "Traceback" not in err
    assert json.loads(out)["imported"] == 2 and set(stored(fake)) == {"before", "after"}
    (kept,) = refused(path)
    assert kept["_shipper_reason"].startswith(f"row 2: line 3, byte offset {SECOND}: not CSV: "
                                              "new-line character seen in unquoted field")
    assert kept["_shipper_line"] == f"{WHEN},bro\rken\n"


@pytest.mark.parametrize(("bad", "why"), [
    (b'"never closed', "not CSV: unexpected end of data"),
    (b'"closed"then more', "not CSV: ',' expected after '\"'"),
])
def test_a_stray_quote_costs_its_own_row_not_the_rows_after_it(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: bytes, why: str,
) -> None:
    """A quote that opens a field CSV never closes would make the rest of the file one field:
    the line it is on is refused, and the lines after it are read again as rows."""
    path = tmp_path / "quote.csv"
    path.write_bytes(csv_bytes(row("before"), row(bad), row("after 1"),
                               row('"quoted, with a comma"'), row("after 3")))
    code, out, err = run(capsys, "import", str(path), "--service", "shop", "--format", "json")
    assert code == 1 and "Traceback" not in err
    assert set(stored(fake)) == {"before", "after 1", "quoted, with a comma", "after 3"}
    (kept,) = refused(path)
    assert kept["_shipper_reason"] == f"row 2: line 3, byte offset {SECOND}: {why}"
    assert kept["_shipper_line"] == row(bad).decode() + "\n"
    assert json.loads(out)["rows_done"] == 5


def test_nul_bytes_are_text_like_any_other(fake: FakeLoki, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nul.csv"
    path.write_bytes(csv_bytes(row(b"a\x00b"), row(b'"\x00quoted\x00"'), row(b"after"),
                               header=b"createdAt,message"))
    code, _, err = run(capsys, "import", str(path), "--service", "shop")
    assert code == 0, err
    assert set(stored(fake)) == {"a\x00b", "\x00quoted\x00", "after"}


@pytest.mark.parametrize(("cell", "why"), [
    ("3000-01-01T00:00:00Z", "time out of range: '3000-01-01T00:00:00Z' (Loki's times run from "
                             "1677-09-21 to 2262-04-11)"),
    ("2262-04-12T00:00:00Z", "time out of range"),
    ("99999999999999999999", "time out of range"),
    ("9" * 400, "not a time: '99999999999999999999999999"),  # a float's infinity
    ("1e400", "not a time: '1e400'"),
])
def test_a_time_out_of_loki_s_range_is_refused_with_the_reason(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str], cell: str, why: str,
) -> None:
    path = tmp_path / "times.csv"
    path.write_bytes(csv_bytes(row("before"), cell.encode() + b",far", row("after")))
    code, out, err = run(capsys, "import", str(path), "--service", "shop", "--format", "json")
    assert code == 1 and "Traceback" not in err
    assert json.loads(out)["imported"] == 2
    (kept,) = refused(path)
    assert kept["message"] == "far" and why in kept["_shipper_reason"]
    assert len(kept["_shipper_reason"]) < 200


def test_deep_json_is_refused_and_its_neighbours_imported(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    head = f'{{"createdAt": "{WHEN}", "message": "deep", "metadata": '
    deep = head + "[" * 100_000 + "]" * 100_000 + "}"
    deep_object = head + '{"a":' * 150 + "1" + "}" * 151
    nested = head + '{"a":' * 40 + "1" + "}" * 41  # deep, but within MAX_DEPTH: the contract's
    path = tmp_path / "deep.jsonl"
    path.write_text("\n".join([json.dumps({"createdAt": WHEN, "message": "before"}), deep,
                               deep_object, nested.replace('"deep"', '"nested"'),
                               '{"createdAt": "' + WHEN + '", "message": "lone \\ud800"}',
                               json.dumps({"createdAt": WHEN, "message": "after"})]) + "\n")
    code, out, err = run(capsys, "import", str(path), "--service", "shop", "--format", "json")
    assert code == 1 and "Traceback" not in err
    assert json.loads(out)["imported"] == 3
    assert set(stored(fake)) == {"before", "nested", "after"}
    kept = refused(path)
    reasons = [r["_shipper_reason"] for r in kept]
    assert reasons[0].endswith("JSON nested deeper than 100 levels")
    assert reasons[1].endswith("JSON nested deeper than 100 levels")
    assert reasons[2].endswith("a lone surrogate ('\\ud800'), half of a UTF-16 pair, is not text")
    assert kept[0]["_shipper_line"] == deep + "\n"  # as read


def test_deep_json_text_in_a_csv_metadata_column_is_kept_as_text(
    fake: FakeLoki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    deep = "[" * 50_000 + "]" * 50_000
    out = io.StringIO()
    csv.writer(out).writerows([["createdAt", "message", "metadata"], [WHEN, "deep", deep]])
    path = tmp_path / "deep.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    code, _, err = run(capsys, "import", str(path), "--service", "shop")
    assert code == 0, err
    assert stored(fake)["deep"]["metadata"] == {"value": deep}


# ----------------------------------------------------------------------- any bytes


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200) | st.text(
    alphabet=st.sampled_from([*',"\r\n\x00{}[]:\\\'=é', "\ufffd"]), max_size=60)
    .map(lambda t: t.encode()), fmt=st.sampled_from(["csv", "jsonl"]))
def test_any_bytes_give_rows_or_refusals_and_never_a_silent_replacement(
    tmp_path: Path, data: bytes, fmt: str,
) -> None:
    from shipper.cli.admin.tablefile import Source

    path = tmp_path / f"any.{fmt}"
    path.write_bytes((b"createdAt,message,metadata\n" if fmt == "csv" else b"") + data)
    source = Source(path, fmt)
    with path.open("rb") as fh:
        for _, line, start, end, scanned in source.scan():
            record = source.read(fh, start, end, line)
            assert (record.row is None) == (scanned.row is None)
            if record.row is None:
                assert record.problem.startswith("line ") and record.text
                json.dumps(record.text).encode("utf-8")  # the refused file can hold it
            elif "\ufffd" in json.dumps(record.row, ensure_ascii=False):
                assert "\ufffd".encode() in data  # only where the file has one


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=12)


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(["createdAt", "level", "type", "actor", "actorId",
                                        "message", "metadata", "id", "extra"]), json_values))
def test_any_json_row_is_an_event_or_a_clear_value_error(row: dict[str, Any]) -> None:
    from shipper.cli.admin.importer import PRESETS, build_event

    try:
        event = build_event(row, PRESETS["prisma"], "shop", None, dt.UTC, frozenset())
    except ValueError as exc:
        assert str(exc) and len(str(exc)) < 300
    else:
        assert event.service == "shop"
