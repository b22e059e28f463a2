"""The sidecar's configuration file: the schema, its errors, ``--check``."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from shipper.cli.main import main
from shipper.sidecar.config import (
    DockerSourceConfig,
    FileSourceConfig,
    HttpSourceConfig,
    MultilineConfig,
    SidecarConfig,
    SidecarConfigError,
    load_config,
)

GOOD = """\
loki: {url: http://loki:3100, tenant: team-a, batch_max_wait: 500ms}
service: shop
env: prod
spool_dir: /var/lib/shipper/spool
positions_file: /var/lib/shipper/positions.json
sources:
  - type: file
    paths: ["/var/log/shop/*.log"]
    format: json
    multiline: {start: '^\\{', timeout: 2s}
  - type: http
    listen: 127.0.0.1:3500
  - type: docker
    labels: {shipper.enable: "true"}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecar.yaml"
    path.write_text(text)
    return path


def test_the_issue_sketch_loads_into_the_schema(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), environ={})
    assert config.loki.url == "http://loki:3100"
    assert config.loki.tenant == "team-a"
    assert config.loki.batch_max_wait == 0.5
    assert (config.loki.service, config.loki.env) == ("shop", "prod")
    assert config.loki.spool_dir == "/var/lib/shipper/spool"
    file, http, docker = config.sources
    assert isinstance(file, FileSourceConfig) and file.paths == ("/var/log/shop/*.log",)
    assert file.multiline == MultilineConfig(start="^\\{", timeout=2.0)
    assert isinstance(http, HttpSourceConfig) and http.listen == "127.0.0.1:3500"
    assert isinstance(docker, DockerSourceConfig) and docker.labels == {"shipper.enable": "true"}


def test_durations_and_sizes_read_the_one_grammar(tmp_path: Path) -> None:
    path = write(tmp_path, "drain_timeout: 1h30m\npositions_interval: 2h0m0s\n"
                           "loki: {shutdown_timeout: 7d, batch_max_bytes: 512KiB}\n"
                           "sources: [{type: file, paths: [/a], poll_interval: 250ms, "
                           "scan_interval: 1m30s, max_line_bytes: 1MiB}]\n")
    config = load_config(path, environ={"SHIPPER_BATCH_MAX_WAIT": "1.5s"})
    assert (config.drain_timeout, config.positions_interval) == (5400.0, 7200.0)
    assert (config.loki.shutdown_timeout, config.loki.batch_max_wait) == (7 * 86400.0, 1.5)
    assert config.loki.batch_max_bytes == 512 * 1024
    (source,) = config.sources
    assert isinstance(source, FileSourceConfig)
    assert (source.poll_interval, source.scan_interval) == (0.25, 90.0)
    assert source.max_line_bytes == 1024 * 1024


def test_the_loki_section_reads_the_handlers_environment_variables(tmp_path: Path) -> None:
    path = write(tmp_path, "sources: [{type: http}]\n")
    config = load_config(path, environ={"LOKI_URL": "https://logs.example:3100",
                                        "LOKI_USERNAME": "u", "LOKI_PASSWORD": "p",
                                        "SHIPPER_SERVICE": "from-env"})
    assert config.loki.url == "https://logs.example:3100"
    assert (config.loki.username, config.loki.password) == ("u", "p")
    assert config.loki.service == "from-env"


def test_env_references_are_expanded_and_a_missing_one_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "sources: [{type: http, listen: '0.0.0.0:3500', "
                           "token: '${INGEST_TOKEN}'}]\n")
    config = load_config(path, environ={"INGEST_TOKEN": "s3cret-token-0123456789"})
    assert config.sources[0].token == "s3cret-token-0123456789"  # type: ignore[union-attr]
    with pytest.raises(SidecarConfigError, match=r"sources\[0\]\.token: .*INGEST_TOKEN"):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sources: [{type: file, paths: [/a/*.log], format: jsn}]",
         r"sources\[0\]\.format: 'jsn': expected one of auto, json, logfmt, text"),
        ("sources: [{type: file, paths: [/a/*.log], pathz: 1}]",
         r"sources\[0\]\.pathz: 1: expected one of the keys .* \(did you mean paths\?\)"),
        ("sources: [{type: file}]", r"sources\[0\]\.paths: \(missing\): expected glob"),
        ("sources: [{type: file, paths: [logs/*.log]}]",
         r"sources\[0\]\.paths: 'logs/\*\.log': expected an absolute path"),
        ("sources: [{type: file, paths: [/a], poll_interval: soon}]",
         r"sources\[0\]\.poll_interval: 'soon': expected a positive duration: seconds, or "),
        ("sources: [{type: file, paths: [/a], max_line_bytes: 0}]",
         r"max_line_bytes: 0: expected a positive size"),
        ("sources: [{type: file, paths: [/a], multiline: {start: '(('}}]",
         r"sources\[0\]\.multiline\.start: '\(\(': expected a valid regular expression"),
        ("sources: [{type: file, paths: [/a], timezone: Mars/Olympus}]",
         r"timezone: 'Mars/Olympus': expected UTC, local, or a zone name"),
        ("sources: [{type: kafka}]", r"sources\[0\]\.type: 'kafka': expected one of file"),
        ("sources: []", r"sources: \[\]: expected a list of sources"),
        ("service: shop", r"sources: \(missing\): expected a list of sources"),
        ("sources: [{type: http, listen: '0.0.0.0:3500'}]",
         r"sources\[0\]\.listen: '0\.0\.0\.0:3500': expected a loopback address .* token"),
        ("sources: [{type: http, listen: 'localhost'}]",
         r"listen: 'localhost': expected host:port"),
        ("sources: [{type: http, token: short}]", r"token: '\(hidden\)': expected a token of"),
        ("sources: [{type: http, listen: '127.0.0.1:3500'}, {type: http, listen: "
         "'127.0.0.1:3500'}]", r"sources\[1\]\.listen: .*not already used by sources\[0\]"),
        ("loki: {urll: x}\nsources: [{type: http}]",
         r"loki\.urll: 'x': expected a setting of the handler's ShipperConfig \(did you mean"),
        ("loki: {batch_max_bytes: 10MiB}\nsources: [{type: http}]",
         r"loki\.batch_max_bytes: must be between 1 KiB and 4 MiB"),
        ("loki: {service: a}\nsources: [{type: http}]",
         r"loki\.service: 'a': expected 'service' at the top level"),
        ("positions_interval: -1\nsources: [{type: http}]",
         r"positions_interval: -1: expected a positive duration"),
        ("workers: 0\nsources: [{type: http}]", r"workers: 0: expected a positive whole number"),
        ("workers: 33\nsources: [{type: http}]",
         r"workers: 33: expected a number of processes from 1 to 32"),
        ("workers: two\nsources: [{type: http}]", r"workers: 'two': expected a positive"),
        ("sources: [{type: docker, labels: [a]}]", r"labels: \['a'\]: expected a mapping"),
        ("- just\n- a list", r"\(top\): \['just', 'a list'\]: expected a mapping"),
        ("sources: [{type: file, paths: [/a]}\n", r"not valid YAML"),
    ],
)
def test_a_bad_file_names_the_file_the_key_the_value_and_what_was_expected(
        tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SidecarConfigError, match=message) as err:
        load_config(path, environ={})
    assert str(err.value).startswith(f"{path}: ")


def test_a_missing_file_or_token_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SidecarConfigError, match=r"nope\.yaml: no such file"):
        load_config(tmp_path / "nope.yaml")
    path = write(tmp_path, f"sources: [{{type: http, token_file: {tmp_path}/missing}}]")
    with pytest.raises(SidecarConfigError, match=r"token_file: '.*missing': expected a "
                                                 "readable file"):
        load_config(path, environ={})


def test_every_setting_has_one_line_of_help_and_a_real_default() -> None:
    for cls in (SidecarConfig, FileSourceConfig, HttpSourceConfig, DockerSourceConfig,
                MultilineConfig):
        for f in dataclasses.fields(cls):
            help_text = f.metadata.get("help")
            assert help_text and "\n" not in help_text, f"{cls.__name__}.{f.name}"
            if f.default is not dataclasses.MISSING:
                assert not isinstance(f.default, str) or f.metadata.get("kind") not in (
                    "size", "duration"), f"{cls.__name__}.{f.name}: default as a real value"


def test_check_exits_0_for_a_good_file_and_2_naming_the_problem(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, GOOD)
    assert main(["sidecar", "--config", str(good), "--check"]) == 0
    out = capsys.readouterr().out
    assert "ok: 1 file, 1 http, 1 docker sources; service shop" in out
    assert "worker processes" not in out
    workers = tmp_path / "workers.yaml"
    workers.write_text("workers: 2\n" + GOOD)
    assert main(["sidecar", "--config", str(workers), "--check"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("; 2 worker processes")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [{type: file, paths: [/a], start_at: middle}]")
    assert main(["sidecar", "--config", str(bad), "--check"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: sources[0].start_at: 'middle': expected one of beginning, end" in err


def test_check_runs_as_a_command(tmp_path: Path) -> None:
    bad = write(tmp_path, "sources: [{type: file, paths: [/a], format: xml}]")
    done = subprocess.run([sys.executable, "-m", "shipper", "sidecar", "--config", str(bad),
                           "--check"], check=False, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "sources[0].format: 'xml': expected one of auto, json, logfmt, text" in done.stderr


@pytest.mark.parametrize("listen", [
    "127.evil.example:3510",
    "127.0.0.1.nip.io:3510",
    "localhost.evil.example:3510",
    "0.0.0.0:3510",
    ":3510",
    "[::]:3510",
    "[::ffff:10.0.0.1]:3510",
    "10.0.0.1:3510",
    "127.1:3510",  # inet_aton's shorthand: not an address ipaddress reads, so not trusted
    "2130706433:3510",
])
def test_an_http_source_not_on_a_loopback_address_needs_a_token(tmp_path: Path,
                                                                  listen: str) -> None:
    """The loopback check parses the address: a host name (other than localhost) is never
    taken for loopback, whatever it starts with."""
    path = write(tmp_path, f"sources: [{{type: http, listen: '{listen}'}}]")
    with pytest.raises(SidecarConfigError, match=r"sources\[0\]\.listen: .*: expected a "
                       r"loopback address .* unless token or token_file is set"):
        load_config(path, environ={})
    with_token = write(tmp_path, f"sources: [{{type: http, listen: '{listen}', "
                                 "token: 0123456789abcdef-token}]")
    assert load_config(with_token, environ={}).sources[0].listen == listen  # type: ignore[union-attr]


@pytest.mark.parametrize("listen", [
    "127.0.0.1:3510", "127.5.6.7:3510", "localhost:3510", "LocalHost:3510", "[::1]:3510",
    "[0:0:0:0:0:0:0:1]:3510", "[::ffff:127.0.0.1]:3510",
])
def test_an_http_source_on_a_loopback_address_needs_no_token(tmp_path: Path,
                                                              listen: str) -> None:
    path = write(tmp_path, f"sources: [{{type: http, listen: '{listen}'}}]")
    assert load_config(path, environ={}).sources[0].listen == listen  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "message"), [
    ("sources: [{type: file, paths: [/a], name: 'app logs'}]",
     r"sources\[0\]\.name: 'app logs': expected a name of letters, digits"),
    ("sources: [{type: http, name: ''}]", r"sources\[0\]\.name: '': expected a name"),
    ("sources: [{type: http, name: 'file#0'}]", r"sources\[0\]\.name: 'file#0': expected"),
    ("sources: [{type: http, name: '-x'}]", r"sources\[0\]\.name: '-x': expected"),
    (f"sources: [{{type: http, name: {'a' * 64}}}]", r"sources\[0\]\.name: 'a{64}': expected"),
    ('sources: [{type: http, name: "a\\u00e9"}]', r"sources\[0\]\.name: 'aé': expected"),
    ("sources: [{type: file, paths: [/a], name: app}, {type: docker, name: app}]",
     r"sources\[1\]\.name: 'app': expected a name not already used by sources\[0\]"),
    ("sources: [{type: http, name: [a]}]", r"sources\[0\]\.name: \['a'\]: expected a string"),
])
def test_a_source_name_must_be_label_safe_and_unique(tmp_path: Path, text: str,
                                                     message: str) -> None:
    with pytest.raises(SidecarConfigError, match=message):
        load_config(write(tmp_path, text), environ={})


def test_source_names_load_and_default_to_none(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, (
        "sources: [{type: file, paths: [/a], name: nginx.access_1}, "
        "{type: http, name: otel-in}, {type: docker}]")), environ={})
    assert [s.name for s in config.sources] == ["nginx.access_1", "otel-in", None]
