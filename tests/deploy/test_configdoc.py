"""configdoc: reference tables rendered from config dataclasses, their help kept next to
each field; the markers mkdocs expands."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from configdoc import ConfigDocError, expand, markdown_table, settings

from shipper.config import ENV_VARS, ShipperConfig

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_has_one_line_of_help_and_every_env_var_a_setting() -> None:
    rows = settings(ShipperConfig, ENV_VARS)
    assert all(row.help and "\n" not in row.help for row in rows)
    assert {var for row in rows for var in row.env} == set(ENV_VARS)


def test_the_reference_shows_every_settings_variable_in_its_row() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    rendered = expand(page)
    for f in dataclasses.fields(ShipperConfig):
        (var,) = [v for v, name in ENV_VARS.items() if name == f.name]
        assert re.search(rf"^\| `{f.name}` \| `{var}` \|", rendered, flags=re.MULTILINE), \
            f"docs/configuration.md does not show {var} in the row of {f.name}"


@dataclasses.dataclass(frozen=True)
class _Source:
    path: str = dataclasses.field(default="/var/log/app.log", metadata={"help": "file to follow"})


@dataclasses.dataclass(frozen=True)
class _Sidecar:
    """A nested schema, shaped like a sidecar's: a list of sources and one nested section."""

    listen: str = dataclasses.field(default="127.0.0.1:3500", metadata={"help": "where to listen"})
    sources: tuple[_Source, ...] = ()
    source: _Source = dataclasses.field(default_factory=_Source)


@dataclasses.dataclass(frozen=True)
class _Undocumented:
    retries: int = 3


def test_a_setting_without_help_or_an_env_var_without_a_setting_stops_the_docs() -> None:
    rows = settings(_Sidecar, {"SIDECAR_LISTEN": "listen", "SIDECAR_PATH": "source.path"})
    assert [(r.name, r.env) for r in rows] == [
        ("listen", ("SIDECAR_LISTEN",)), ("sources[].path", ()), ("source.path", ("SIDECAR_PATH",))]
    with pytest.raises(ConfigDocError, match="names the setting 'port'"):
        settings(_Sidecar, {"SIDECAR_PORT": "port"})
    with pytest.raises(ConfigDocError, match=r"_Undocumented.retries has no one-line help"):
        settings(_Undocumented)


def test_sizes_and_durations_are_shown_the_way_they_are_written() -> None:
    rows = {row.name: row for row in settings(ShipperConfig, ENV_VARS)}
    assert (rows["batch_max_bytes"].type, rows["batch_max_bytes"].default) == ("size", "`1MiB`")
    assert (rows["backoff_min"].type, rows["backoff_min"].default) == ("duration", "`500ms`")
    assert (rows["spool"].type, rows["spool"].default) == ("bool", "`true`")
    assert rows["encoding"].type == "`json` or `json+gzip` or `protobuf`"
    # kept as pairs, written as a mapping: the field says how it is written
    assert rows["headers"].type == "mapping of header name to text"


def test_a_marker_inside_a_code_block_is_left_as_it_is() -> None:
    page = "```text\n<!-- config-table: shipper.config:ShipperConfig -->\n```\n"
    assert expand(page) == page


def test_the_table_has_one_row_per_setting_and_escapes_pipes() -> None:
    table = markdown_table(settings(_Sidecar))
    lines = table.splitlines()
    assert lines[0] == "| setting | environment variable | type | default | meaning |"
    assert len(lines) == 2 + 3
    assert "| `listen` | — | text | `127.0.0.1:3500` | where to listen |" in lines
    assert markdown_table([dataclasses.replace(settings(_Sidecar)[0], help="a | b")]).count(
        "a \\| b") == 1


def test_a_marker_naming_a_missing_class_stops_the_build() -> None:
    with pytest.raises(ConfigDocError, match=r"cannot find shipper.config:NoSuchConfig"):
        expand("<!-- config-table: shipper.config:NoSuchConfig -->\n")
