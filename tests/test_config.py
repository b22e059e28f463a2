"""Configuration: keyword arguments, environment variables, YAML, and clear errors."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from shipper.config import ENV_VARS, ConfigError, ShipperConfig, default_spool_dir, env_vars

#: the connection to Loki: the only settings not named SHIPPER_<SETTING> (logcli's own names
#: where logcli has the setting and shipper had no name for it before)
LOKI_VARS = {"url": "LOKI_URL", "tenant": "LOKI_TENANT", "username": "LOKI_USERNAME",
             "password": "LOKI_PASSWORD", "bearer_token": "LOKI_BEARER_TOKEN",
             "bearer_token_file": "LOKI_BEARER_TOKEN_FILE",
             "ca_bundle": "LOKI_CA_BUNDLE", "verify_tls": "LOKI_VERIFY_TLS",
             "client_cert": "LOKI_CLIENT_CERT_PATH", "client_key": "LOKI_CLIENT_KEY_PATH",
             "proxy_url": "LOKI_HTTP_PROXY_URL", "timeout": "LOKI_TIMEOUT"}


def test_env_vars_fill_the_settings() -> None:
    cfg = ShipperConfig.load(environ={
        "LOKI_URL": "http://loki:3100", "LOKI_TENANT": "team-a", "LOKI_USERNAME": "u",
        "LOKI_PASSWORD": "p", "SHIPPER_SERVICE": "checkout", "SHIPPER_ENV": "prod",
        "SHIPPER_SPOOL_DIR": "/tmp/sp", "SHIPPER_BATCH_MAX_BYTES": "512KiB",
    })
    assert (cfg.url, cfg.tenant, cfg.username, cfg.password) == (
        "http://loki:3100", "team-a", "u", "p")
    assert (cfg.service, cfg.env, cfg.spool_dir) == ("checkout", "prod", "/tmp/sp")
    assert cfg.batch_max_bytes == 512 * 1024


def test_every_setting_has_one_variable_named_one_way() -> None:
    fields = [f.name for f in dataclasses.fields(ShipperConfig)]
    by_setting = {name: var for var, name in ENV_VARS.items()}
    assert sorted(by_setting) == sorted(fields) and len(ENV_VARS) == len(fields)
    for name in fields:
        assert by_setting[name] == LOKI_VARS.get(name, f"SHIPPER_{name.upper()}"), name


def test_the_variables_once_missing_are_read() -> None:
    cfg = ShipperConfig.load(environ={
        "SHIPPER_BATCH_MAX_EVENTS": "500", "SHIPPER_QUEUE_MAX_BYTES": "8MiB",
        "SHIPPER_RETRY_BUDGET": "1m", "SHIPPER_BACKOFF_MIN": "250ms", "SHIPPER_BACKOFF_MAX": "10s",
        "SHIPPER_SPOOL_SEGMENT_BYTES": "1MiB", "SHIPPER_IGNORE_LOGGERS": "noisy, chatty.lib",
    })
    assert (cfg.batch_max_events, cfg.queue_max_bytes, cfg.spool_segment_bytes) == (
        500, 8 * 1024 * 1024, 1024 * 1024)
    assert (cfg.retry_budget, cfg.backoff_min, cfg.backoff_max) == (60.0, 0.25, 10.0)
    assert cfg.ignore_loggers == ("noisy", "chatty.lib")


def test_a_new_setting_has_its_variable_without_a_line_more() -> None:
    @dataclasses.dataclass(frozen=True)
    class Grown(ShipperConfig):
        flush_jitter: float = dataclasses.field(default=0.0, metadata={"help": "jitter"})

    assert env_vars(Grown)["SHIPPER_FLUSH_JITTER"] == "flush_jitter"
    assert env_vars(Grown)["LOKI_URL"] == "url"

    @dataclasses.dataclass(frozen=True)
    class Clash(ShipperConfig):
        loki_url: str = dataclasses.field(default="", metadata={"env": "LOKI_URL"})

    with pytest.raises(ValueError, match="loki_url and url both read LOKI_URL"):
        env_vars(Clash)


def test_keyword_arguments_win_over_env_and_strings_are_converted() -> None:
    cfg = ShipperConfig.load(environ={"LOKI_URL": "http://env:3100"}, url="http://kw:3100",
                             batch_max_wait="250ms", timeout="5", spool="false",
                             redact_keys="pin, otp")
    assert cfg.url == "http://kw:3100"
    assert cfg.batch_max_wait == 0.25 and cfg.timeout == 5.0
    assert cfg.spool is False and cfg.resolved_spool_dir() is None
    assert cfg.redact_keys == ("pin", "otp")


@pytest.mark.parametrize(("text", "seconds"), [
    ("7d", 7 * 86400.0), ("1h30m", 5400.0), ("2h0m0s", 7200.0), ("1.5h", 5400.0),
    ("250ms", 0.25), ("90", 90.0), ("0.5", 0.5), (" 1m30s ", 90.0),
])
def test_durations_read_the_one_grammar_from_keywords_env_and_yaml(
    tmp_path: Path, text: str, seconds: float,
) -> None:
    assert ShipperConfig.load(environ={}, shutdown_timeout=text).shutdown_timeout == seconds
    env = ShipperConfig.load(environ={"SHIPPER_BATCH_MAX_WAIT": text, "LOKI_TIMEOUT": text})
    assert (env.batch_max_wait, env.timeout) == (seconds, seconds)
    path = tmp_path / "shipper.yaml"
    path.write_text(f"retry_budget: '{text}'\nbackoff_max: {text}\n")
    cfg = ShipperConfig.load(path, environ={})
    assert (cfg.retry_budget, cfg.backoff_max) == (seconds, seconds)


@pytest.mark.parametrize(("text", "size"), [
    ("1048576", 1048576), ("512KiB", 512 * 1024), ("1.5MB", 1_500_000), ("4mb", 4_000_000),
    ("1 GiB", 1024**3),
])
def test_sizes_read_the_one_grammar_from_keywords_and_env(text: str, size: int) -> None:
    assert ShipperConfig.load(environ={}, spool_max_bytes=text).spool_max_bytes == size
    env = ShipperConfig.load(environ={"SHIPPER_SPOOL_MAX_BYTES": text})
    assert env.spool_max_bytes == size


def test_yaml_file_is_read_under_a_shipper_key(tmp_path: Path) -> None:
    path = tmp_path / "shipper.yaml"
    path.write_text("shipper:\n  url: http://loki:3100\n  service: api\n  encoding: protobuf\n")
    cfg = ShipperConfig.load(path, environ={"SHIPPER_SERVICE": "ignored"})
    assert (cfg.url, cfg.service, cfg.encoding) == ("http://loki:3100", "api", "protobuf")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"url": "loki:3100"}, "url: expected http(s)://"),
        ({"encoding": "xml"}, "encoding: expected one of json, json+gzip, protobuf"),
        ({"batch_max_bytes": "8MiB"}, "batch_max_bytes: must be between 1 KiB and 4 MiB"),
        ({"batch_max_bytes": "lots"}, "batch_max_bytes: not a size: 'lots'; use bytes"),
        ({"timeout": "soon"}, "timeout: not a duration: 'soon'; use seconds"),
        ({"retry_budget": "-1m"}, "retry_budget: negative duration: '-1m'"),
        ({"spool_max_bytes": -1}, "spool_max_bytes: negative size: -1"),
        ({"spool": "maybe"}, "spool: expected true or false"),
        ({"username": "u"}, "password: LOKI_USERNAME is set"),
        ({"bacth_max_bytes": 1}, "unknown setting 'bacth_max_bytes'"),
        ({"queue_max_events": 0}, "queue_max_events: must be positive"),
    ],
)
def test_bad_values_name_the_setting(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        ShipperConfig.load(environ={}, **settings)


def test_bad_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("shipper: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        ShipperConfig.load(path, environ={})


def test_empty_url_means_spool_only() -> None:
    assert ShipperConfig.load(environ={"LOKI_URL": ""}).url is None
    assert ShipperConfig(url="  ").url is None


def test_default_spool_dir_is_per_service_under_the_user_cache() -> None:
    a, b = default_spool_dir("checkout"), default_spool_dir("a/b c")
    assert a.name == "checkout" and a.parent.name == "spool"
    assert b.name == "a_b_c"
    assert ShipperConfig(service="checkout").resolved_spool_dir() == a


def test_password_is_not_in_repr() -> None:
    text = repr(ShipperConfig(username="u", password="hunter2", url="http://l:3100"))
    assert "hunter2" not in text
