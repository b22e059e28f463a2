"""docs/security.md states what is true of the code: every limit of the handler's and the
sidecar's settings is on the page with the default the code has, the page is in the site's nav
and linked from README and the home page, and it answers who can write, read and delete."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipper._units import UnitError, parse_seconds, parse_size
from shipper.config import ShipperConfig
from shipper.sidecar import config as sidecar

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "security.md"

#: the prefix a sidecar setting has on the page (as in docs/sidecar.md) -> its dataclass
_CLASSES: dict[str, type[Any]] = {
    "": sidecar.SidecarConfig, "file.": sidecar.FileSourceConfig,
    "http.": sidecar.HttpSourceConfig, "docker.": sidecar.DockerSourceConfig,
    "multiline.": sidecar.MultilineConfig,
}
#: a setting that bounds something: a size, a count, a time allowed
_LIMIT = re.compile(r"^max_|_max_|^workers$|_limit$|timeout$|^retry_budget$|"
                    r"^read_chunk_bytes$|^spool_segment_bytes$|^max_lines$")


def _text() -> str:
    return PAGE.read_text(encoding="utf-8")


def _section(title: str) -> str:
    return _text().split(f"\n### {title}\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]


def _rows(markdown: str) -> dict[str, str]:
    """```name``` -> its default cell, from the first column of the tables of ``markdown``."""
    return {m.group(1): m.group(2).strip().strip("`") for m in
            re.finditer(r"^\| `([a-z_.]+)` \| ([^|]+) \|", markdown, re.MULTILINE)}


def _same(shown: str, value: object) -> bool:
    """``shown`` (a size, a duration or a count as the page writes it) is ``value``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return shown == str(value)
    for parse in (lambda s: float(s.replace(",", "")), parse_size, parse_seconds):
        try:
            if parse(shown) == value:
                return True
        except (UnitError, ValueError):
            continue
    return False


def _field(cls: type[Any], name: str) -> dataclasses.Field[Any] | None:
    return next((f for f in dataclasses.fields(cls) if f.name == name), None)


def _default(f: dataclasses.Field[Any]) -> object:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def _limits(cls: type[Any], prefix: str = "") -> dict[str, dataclasses.Field[Any]]:
    return {prefix + f.name: f for f in dataclasses.fields(cls) if _LIMIT.search(f.name)}


def test_every_limit_of_the_handler_is_on_the_page_with_its_default() -> None:
    rows = _rows(_section("The handler and its pipeline"))
    limits = _limits(ShipperConfig)
    assert {"queue_max_bytes", "spool_max_bytes", "max_line_bytes", "type_limit"} <= set(limits)
    missing = sorted(set(limits) - set(rows))
    assert missing == [], f"limits missing from docs/security.md: {missing}"
    for name, shown in rows.items():
        f = _field(ShipperConfig, name)
        assert f is not None, f"docs/security.md lists {name}, which ShipperConfig lacks"
        assert _same(shown, _default(f)), f"{name}: the page says {shown}, the code " \
                                          f"{_default(f)!r}"


def test_every_limit_of_the_sidecar_is_on_the_page_with_its_default() -> None:
    rows = _rows(_section("The sidecar"))
    limits: dict[str, dataclasses.Field[Any]] = {}
    for prefix, cls in _CLASSES.items():
        limits.update(_limits(cls, prefix))
    missing = sorted(set(limits) - set(rows))
    assert missing == [], f"sidecar limits missing from docs/security.md: {missing}"
    for name, shown in rows.items():
        prefix, _, bare = name.rpartition(".")
        cls = _CLASSES[prefix + "." if prefix else ""]
        f = _field(cls, bare)
        assert f is not None, f"docs/security.md lists {name}, which the sidecar lacks"
        assert _same(shown, _default(f)), f"{name}: the page says {shown}, the code " \
                                          f"{_default(f)!r}"


def test_the_fixed_limits_the_page_names_are_the_codes() -> None:
    from shipper import line, redact
    from shipper.delivery import link
    from shipper.sidecar import metrics
    from shipper.sidecar.sources import http

    text = " ".join(_text().split())
    assert f"names at most {http._MAX_REASONS} refused entries in one answer" in text
    assert (f"`/metrics` take {metrics._OPS_CONNECTIONS} connections, each request within "
            f"{metrics._OPS_TIMEOUT:.0f} s") in text
    assert f"up to {link._MAX_RETRY_AFTER:.0f} s" in text
    assert f"followed {line._MAX_DEPTH} levels deep" in text
    assert redact._MAX_DEPTH == line._MAX_DEPTH  # "and so is redaction"
    assert f"1 to {sidecar.MAX_WORKERS}" in text


def test_lokis_and_the_gateways_limits_are_the_config_files() -> None:
    text = " ".join(_section("Loki and the gateway").split())
    limits = yaml.safe_load((REPO / "loki" / "config.yaml").read_text())["limits_config"]
    for key in ("ingestion_rate_mb", "per_stream_rate_limit", "max_line_size",
                "max_global_streams_per_user", "reject_old_samples_max_age"):
        assert f"`{key}` {limits[key]}" in text, key
    nginx = (REPO / "loki" / "gateway" / "nginx.conf").read_text()
    size = re.search(r"client_max_body_size (\d+)m;", nginx)
    wait = re.search(r"proxy_read_timeout (\d+)s;", nginx)
    assert size and f"up to {size.group(1)} MiB" in text
    assert wait and f"waits {wait.group(1)} s" in text


@pytest.mark.parametrize("who", ["handler", "sidecar", "Loki", "gateway", "Grafana",
                                 "admin CLI", "digest", "MinIO"])
def test_the_page_says_what_each_part_may_write_read_and_delete(who: str) -> None:
    table = _text().split("## Who can write, read and delete", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("|") and who in
            line.split("|")[1]]
    assert rows, f"no row for the {who}"
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert len(cells) == 5 and cells[4], rows[0]


def test_the_page_is_in_the_nav_and_linked_from_readme_and_home() -> None:
    # the nav alone: the rest of mkdocs.yml has tags safe_load refuses
    nav = yaml.safe_load("nav:" + (REPO / "mkdocs.yml").read_text().split("\nnav:", 1)[1])
    assert "security.md" in str(nav["nav"])
    assert "(docs/security.md)" in (REPO / "README.md").read_text()
    assert "(security.md)" in (REPO / "docs" / "index.md").read_text()


def test_every_bad_input_row_says_what_it_gets() -> None:
    table = _text().split("## What each bad input gets", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("| ")
            and not line.startswith("| input")]
    assert len(rows) >= 25
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 2 and all(cells), row
