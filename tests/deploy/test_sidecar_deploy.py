"""The sidecar's deployment files (deploy/sidecar/) and its documentation (docs/sidecar.md):
every example config passes ``shipper sidecar --check``; the Kubernetes manifest, the systemd
unit and the docs agree with the code."""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipper.cli.main import main
from shipper.sidecar.config import (
    DockerSourceConfig,
    FileSourceConfig,
    HttpSourceConfig,
    MultilineConfig,
    SidecarConfig,
    load_config,
    parse_listen,
)

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "sidecar"
DOCS = REPO / "docs" / "sidecar.md"


def _manifest() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if d]


def _k8s_config(tmp_path: Path) -> Path:
    (config_map,) = [d for d in _manifest() if d["kind"] == "ConfigMap"]
    path = tmp_path / "sidecar.yaml"
    path.write_text(config_map["data"]["sidecar.yaml"])
    return path


@pytest.mark.parametrize("name", ["compose.yaml", "systemd.yaml"])
def test_example_configs_pass_check(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sidecar", "--config", str(DEPLOY / name), "--check"]) == 0
    assert ": ok: " in capsys.readouterr().out


def test_the_kubernetes_config_passes_check_as_a_command(tmp_path: Path) -> None:
    env = {**os.environ, "LOKI_PASSWORD": "from-the-secret"}  # as the pod's env gives it
    done = subprocess.run([sys.executable, "-m", "shipper", "sidecar", "--config",
                           str(_k8s_config(tmp_path)), "--check"],
                          check=False, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert "ok: 1 file, 1 http sources; service shop; Loki http://loki.monitoring.svc:3100" \
        in done.stdout


def test_the_kubernetes_sidecar_container_matches_its_config(tmp_path: Path) -> None:
    config = load_config(_k8s_config(tmp_path), environ={"LOKI_PASSWORD": "from-the-secret"})
    (deployment,) = [d for d in _manifest() if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (sidecar,) = [c for c in pod["containers"] if c["name"] == "shipper-sidecar"]
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    config_path = Path(sidecar["args"][sidecar["args"].index("--config") + 1])
    assert str(config_path.parent) in mounts and mounts[str(config_path.parent)]["readOnly"]
    state = str(Path(config.positions_file).parent)
    assert state in mounts and not mounts[state].get("readOnly")
    assert str(config.loki.spool_dir).startswith(state)
    for source in config.sources:
        if isinstance(source, FileSourceConfig):
            for pattern in source.paths:
                assert any(pattern.startswith(p + "/") for p in mounts), pattern
    assert config.metrics_listen is not None
    host, port = parse_listen(config.metrics_listen)
    assert host == "0.0.0.0"  # the kubelet probes the pod's IP
    (container_port,) = sidecar["ports"]
    assert container_port["containerPort"] == port
    # ready: sources started and somewhere to deliver; live: every source makes progress
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["terminationGracePeriodSeconds"] > config.drain_timeout
    (app,) = [c for c in pod["containers"] if c["name"] == "app"]
    events_url = next(e["value"] for e in app["env"] if e["name"] == "SHIPPER_EVENTS_URL")
    (http,) = [s for s in config.sources if isinstance(s, HttpSourceConfig)]
    assert events_url == f"http://{http.listen}/v1/events"


def test_the_systemd_unit_stops_with_sigterm_after_the_drain_and_reloads_with_sighup() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "shipper-sidecar.service")
    service = unit["Service"]
    config = load_config(DEPLOY / "systemd.yaml", environ={})
    assert service["ExecStart"].endswith("shipper sidecar --config /etc/shipper/sidecar.yaml")
    assert service["ExecStartPre"].endswith("--check")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > config.drain_timeout
    assert service["User"] != "root"
    state = Path(config.positions_file).parent
    assert state == Path("/var/lib") / service["StateDirectory"]


# --------------------------------------------------------------------------- docs/sidecar.md


def _doc_rows() -> dict[str, tuple[str, str]]:
    """``key`` -> (default, meaning) from the docs' settings tables."""
    rows = {}
    for line in DOCS.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = (cells[1], cells[2])
    return rows


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}s"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v!r}".replace("'", '"') for k, v in value.items()) or "{}"
    if isinstance(value, tuple):
        return "[]" if not value else ", ".join(value)
    return str(value)


@pytest.mark.parametrize("cls", [SidecarConfig, FileSourceConfig, HttpSourceConfig,
                                 DockerSourceConfig, MultilineConfig])
def test_docs_document_every_setting_with_its_default(cls: type[Any]) -> None:
    rows = _doc_rows()
    prefix = {SidecarConfig: "", FileSourceConfig: "file.", HttpSourceConfig: "http.",
              DockerSourceConfig: "docker.", MultilineConfig: "multiline."}[cls]
    for f in dataclasses.fields(cls):
        if f.name in ("loki", "type", "sources"):
            continue
        key = prefix + f.name
        assert key in rows, f"docs/sidecar.md has no row for `{key}`"
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING  # type: ignore[misc]
            else "required")
        if f.metadata.get("kind") == "size" and isinstance(default, int):
            shown = f"{default // 1024} KiB" if default < 1 << 20 else f"{default >> 20} MiB"
        elif f.metadata.get("kind") == "regex" and isinstance(default, str) and len(default) > 40:
            shown = "the usual level words"
        else:
            shown = _shown(default)
        assert shown in rows[key][0], f"`{key}`: default {shown!r} not in {rows[key][0]!r}"


def test_docs_show_the_deploy_files_as_they_are() -> None:
    text = DOCS.read_text()
    for name in ("kubernetes.yaml", "shipper-sidecar.service"):
        body = (DEPLOY / name).read_text().strip()
        assert body in text, f"docs/sidecar.md does not show deploy/sidecar/{name} verbatim"


def test_docs_yaml_blocks_are_valid_sidecar_configs(tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S)
    configs = [b for b in blocks if re.search(r"^sources:", b, re.M)]
    assert len(configs) >= 3
    for i, block in enumerate(configs):
        path = tmp_path / f"block{i}.yaml"
        path.write_text(block)
        load_config(path, environ={"INGEST_TOKEN": "a-token-of-sufficient-length"})


def test_the_docs_format_examples_read_as_the_docs_say() -> None:
    from shipper.event import Level
    from shipper.sidecar.formats import LineParser

    text = DOCS.read_text()
    block = text.split("the message `db down`", 1)[1].split("```text\n", 1)[1].split("```")[0]
    examples = block.strip().splitlines()
    assert len(examples) == 8
    parser = LineParser(format="auto", service="shop")
    for line in examples:
        event = parser.parse(line, None, 0)
        assert event.level == Level.ERROR, line
        assert event.timestamp_ns == 1_795_166_102_123_000_000, line
        assert event.message == ("db down" if not line[0].isdigit() else line), line
        assert "parse_error" not in event.metadata, line


# --------------------------------------------------------------------------- the Docker API


def _text_files() -> list[Path]:
    found = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")),
             *sorted(REPO.glob("docker-compose*.yml"))]
    for folder in ("deploy", "k8s"):
        found += sorted(p for p in (REPO / folder).rglob("*") if p.is_file())
    return found


def test_no_file_says_a_read_only_docker_socket_is_safe() -> None:
    claims = re.compile(r"read-only is enough|:ro(`)? is enough|read-only (mount )?is safe",
                        re.IGNORECASE)
    said = [f"{p.relative_to(REPO)}:{n}" for p in _text_files()
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if claims.search(line)]
    assert said == []


def test_the_socket_is_mounted_only_into_a_socket_proxy() -> None:
    for path in _text_files():
        text = path.read_text(encoding="utf-8")
        for block in re.split(r"\n```", text) if path.suffix == ".md" else [text]:
            if re.search(r"/var/run/docker\.sock:/", block):
                assert "docker-socket-proxy" in block, f"{path.relative_to(REPO)} mounts the " \
                                                        "Docker socket outside a proxy"


def test_the_docs_say_the_docker_api_is_root_and_what_to_do_instead() -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("### The Docker API is root on the host", 1)[1].split("\n## ", 1)[0]
    words = " ".join(section.split())
    assert "root on the host" in words and ":ro" in words
    assert "docker-socket-proxy" in words and "CONTAINERS: 1" in words
    assert "only where root is accepted" in words
    block = section.split("```yaml", 1)[1].split("```", 1)[0]
    compose = yaml.safe_load(block.replace("\n    ", "\n"))
    proxy = compose["services"]["docker-api"]
    assert proxy["environment"]["CONTAINERS"] == 1 and "POST" not in proxy["environment"]
    assert compose["networks"]["docker-api"]["internal"] is True
    assert "docker.sock" not in str(compose["services"]["sidecar"])
    (host,) = [f for f in dataclasses.fields(DockerSourceConfig) if f.name == "host"]
    assert "root on the host" in host.metadata["help"]
