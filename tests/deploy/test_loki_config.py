"""loki/config.yaml and loki/config.scale.yaml: only keys Loki 3.7 has, retention and deletion
on, and the retention block exactly as loki/retention.yaml renders it."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipper._units import parse_duration
from shipper.cli.retention import BLOCK_BEGIN, BLOCK_END, RetentionPolicy
from shipper.event import DEFAULT_MAX_LINE_BYTES
from tests.support.lokiconfig import (
    CONFIG_PATH,
    LOKI_CONFIGS,
    RETENTION_PATH,
    expand_env,
    load_defaults,
)

# Loki omits these from GET /config?mode=defaults because their default is an empty list
# (`omitempty`), so their item keys come from Loki's own structs: PeriodConfig for
# schema_config.configs and StreamRetention for limits_config.retention_stream.
_EMPTY_BY_DEFAULT: dict[str, Any] = {
    "schema_config": {
        "configs": [
            {
                "from": None,
                "store": None,
                "object_store": None,
                "schema": None,
                "row_shards": None,
                "index": {"prefix": None, "period": None, "tags": None},
                "chunks": {"prefix": None, "period": None, "tags": None},
            }
        ]
    },
    "limits_config": {"retention_stream": [{"selector": None, "priority": None, "period": None}]},
}

_DATA_DIR_REF = "${LOKI_DATA_DIR:-/tmp/loki}"


def _merge_known(base: Any, extra: Any) -> Any:
    if isinstance(base, dict) and isinstance(extra, dict):
        merged = dict(base)
        for key, value in extra.items():
            merged[key] = _merge_known(base.get(key), value) if key in base else value
        return merged
    return extra


def unknown_keys(config: Any, known: Any, path: str = "") -> Iterator[str]:
    """Key paths of ``config`` that ``known`` (Loki's defaults tree) does not have. Lists of
    maps are compared item by item against the keys of the default items."""
    if isinstance(config, dict):
        if not isinstance(known, dict):
            yield f"{path} (Loki expects a {type(known).__name__}, not a mapping)"
            return
        for key, value in config.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in known:
                yield where
            else:
                yield from unknown_keys(value, known[key], where)
    elif isinstance(config, list) and any(isinstance(item, dict) for item in config):
        templates = [item for item in known if isinstance(item, dict)] if known else []
        if not templates:
            yield f"{path} (Loki's default has no list of mappings here)"
            return
        template: dict[str, Any] = {}
        for item in templates:
            template = _merge_known(template, item)
        for index, item in enumerate(config):
            yield from unknown_keys(item, template, f"{path}[{index}]")


@pytest.fixture(scope="module")
def config_text() -> str:
    return CONFIG_PATH.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def config(config_text: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(expand_env(config_text, {}))
    return data


@pytest.fixture(scope="module")
def known_keys() -> dict[str, Any]:
    known: dict[str, Any] = _merge_known(load_defaults(), _EMPTY_BY_DEFAULT)
    return known


@pytest.mark.parametrize("path", LOKI_CONFIGS, ids=lambda p: p.name)
def test_every_key_exists_in_loki_3_7_defaults(path: Path, known_keys: dict[str, Any]) -> None:
    config = yaml.safe_load(expand_env(path.read_text(encoding="utf-8"), {}))
    assert list(unknown_keys(config, known_keys)) == []


def test_key_check_finds_keys_loki_does_not_have(known_keys: dict[str, Any]) -> None:
    # shared_store was removed in Loki 3.x and makes it refuse to start; a typo does the same.
    bad = {
        "compactor": {"shared_store": "filesystem", "retention_enabled": True},
        "limits_config": {"retention_streams": [], "retention_stream": [{"selectr": "{a=\"b\"}"}]},
        "schema_config": {"configs": [{"schema": "v13", "index": {"perod": "24h"}}]},
        "ruler": {"alertmanager_url": "http://am:9093", "evaluation_interval_x": "1m"},
    }
    assert sorted(unknown_keys(bad, known_keys)) == [
        "compactor.shared_store",
        "limits_config.retention_stream[0].selectr",
        "limits_config.retention_streams",
        "ruler.evaluation_interval_x",
        "schema_config.configs[0].index.perod",
    ]


def test_retention_and_the_deletion_api_are_enabled(config: dict[str, Any]) -> None:
    compactor = config["compactor"]
    assert compactor["retention_enabled"] is True
    # without a delete request store Loki refuses to start with retention on
    assert compactor["delete_request_store"] == "filesystem"
    assert config["limits_config"]["deletion_mode"] == "filter-and-delete"
    assert parse_duration(compactor["delete_request_cancel_period"]) == dt.timedelta(hours=24)


def test_schema_is_tsdb_v13_with_a_24h_index_period_starting_in_the_past(
    config: dict[str, Any],
) -> None:
    (period,) = config["schema_config"]["configs"]
    assert period["store"] == "tsdb"
    assert period["schema"] == "v13"
    assert period["object_store"] == "filesystem"
    assert parse_duration(period["index"]["period"]) == dt.timedelta(hours=24)
    assert dt.date.fromisoformat(str(period["from"])) < dt.date.today()


def test_single_binary_with_structured_metadata_and_no_ruler(
    config: dict[str, Any], config_text: str
) -> None:
    assert config["target"] == "all"
    assert config["auth_enabled"] is False
    assert config["common"]["replication_factor"] == 1
    assert config["common"]["ring"]["kvstore"]["store"] == "inmemory"
    assert config["limits_config"]["allow_structured_metadata"] is True
    assert "ruler" not in config
    assert "Loki's ruler is not used" in config_text
    assert "Alerting lives in Grafana" in config_text


def test_data_directory_comes_from_loki_data_dir_with_a_default(config_text: str) -> None:
    raw = yaml.safe_load(config_text)
    paths = [
        raw["common"]["path_prefix"],
        raw["common"]["storage"]["filesystem"]["chunks_directory"],
        raw["common"]["storage"]["filesystem"]["rules_directory"],
        raw["compactor"]["working_directory"],
    ]
    assert all(p.startswith(_DATA_DIR_REF) for p in paths)
    # the only environment reference in the file
    assert set(re.findall(r"\$\{[^}]*\}", config_text)) == {_DATA_DIR_REF}

    native = yaml.safe_load(expand_env(config_text, {}))
    assert native["common"]["path_prefix"] == "/tmp/loki"
    assert native["compactor"]["working_directory"] == "/tmp/loki/compactor"
    compose = yaml.safe_load(expand_env(config_text, {"LOKI_DATA_DIR": "/loki"}))
    assert compose["common"]["path_prefix"] == "/loki"
    assert compose["common"]["storage"]["filesystem"]["chunks_directory"] == "/loki/chunks"


def test_max_line_size_equals_the_shippers_line_cap(config: dict[str, Any]) -> None:
    # Loki's byte sizes (c2h5oh/datasize) count KB as 1024 bytes.
    size = re.fullmatch(r"(\d+)(KB|MB)", config["limits_config"]["max_line_size"])
    assert size is not None
    number, unit = size.groups()
    assert int(number) * {"KB": 1024, "MB": 1024 * 1024}[unit] == DEFAULT_MAX_LINE_BYTES
    assert config["limits_config"]["max_line_size_truncate"] is False


@pytest.mark.parametrize("path", LOKI_CONFIGS, ids=lambda p: p.name)
def test_every_limit_outside_the_retention_block_has_a_reason_in_a_comment(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    start = lines.index("limits_config:") + 1
    end = next(i for i, line in enumerate(lines) if BLOCK_BEGIN in line)
    group_has_comment = False
    for line in lines[start:end]:
        if not line.strip():
            group_has_comment = False
        elif line.strip().startswith("#"):
            group_has_comment = True
        else:
            assert group_has_comment, f"no comment gives the reason for: {line.strip()}"


def _block(text: str) -> str:
    lines = text.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith(BLOCK_BEGIN))
    end = next(i for i, line in enumerate(lines) if line.lstrip().startswith(BLOCK_END))
    return "".join(lines[start : end + 1])


@pytest.mark.parametrize("path", LOKI_CONFIGS, ids=lambda p: p.name)
def test_config_retention_block_is_what_retention_yaml_renders(path: Path, tmp_path: Path) -> None:
    """Fails when a Loki config and loki/retention.yaml disagree: run
    `shipper retention render --write loki/config.yaml` (and loki/config.scale.yaml)."""
    config_text = path.read_text(encoding="utf-8")
    config = yaml.safe_load(expand_env(config_text, {}))
    policy = RetentionPolicy.load(RETENTION_PATH)
    assert _block(config_text) == policy.render("  ")

    limits = config["limits_config"]
    assert {k: limits[k] for k in ("retention_period", "retention_stream")} == policy.limits()

    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    assert policy.render_into(copy) is False
    assert copy.read_text(encoding="utf-8") == config_text


def test_block_comparison_fails_on_a_stale_block(config_text: str) -> None:
    stale = config_text.replace("period: 30d", "period: 14d", 1)
    assert stale != config_text
    assert _block(stale) != RetentionPolicy.load(RETENTION_PATH).render("  ")


def test_the_ingester_answers_for_every_time_range_so_history_is_queryable_at_once(
    config: dict[str, Any],
) -> None:
    # Entries with old timestamps (a spool replayed after a long outage, a backfill, the day
    # before of `shipper demo --scenario incident`) stay in the ingester until their chunk is
    # flushed; with Loki's default look-back (about 3h) a query of an older range skips the
    # ingester and sees none of them for hours. -1ns (exactly -1) is Loki's "always", and is
    # allowed only with the filesystem object store. Checked against a real Loki by
    # tests/live/test_alert_rules_on_demo_data.py (the day before, read by offset 1d).
    assert config["ingester"]["query_store_max_look_back_period"] == "-1ns"
    assert config["common"]["storage"].keys() == {"filesystem"}
    assert config["target"] == "all"
