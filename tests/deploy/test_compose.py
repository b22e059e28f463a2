"""docker-compose.yml, Dockerfile, .dockerignore, .env.example and README's first command,
checked as files.

No Docker engine here: these tests read the files (PyYAML) and hold them to what the stack needs
to start: pinned images, Loki's config and health, Grafana without a default password and with
the directories its provisioning expects, every variable documented, no usable secret in
.env.example, and README's first command writing every password (run with a stand-in docker).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
SCALE_COMPOSE = REPO / "docker-compose.scale.yml"
README = REPO / "README.md"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; $$ is a literal $
_COMPOSE_VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
_BARE_VAR = re.compile(r"(?<!\$)\$([A-Za-z_][A-Za-z0-9_]*)")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_example()


def read_env_example() -> dict[str, str]:
    """.env.example as NAME -> value."""
    values = {}
    for raw in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: {raw!r} is not NAME=value"
            values[name.strip()] = value.strip().strip("'\"")
    return values


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    service = compose["services"][name]
    assert isinstance(service, dict)
    return service


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each short-syntax volume."""
    out = []
    for item in service.get("volumes", []):
        assert isinstance(item, str), "long-syntax volumes are not used here"
        source, target, *mode = item.split(":")
        out.append((source, target, mode[0] if mode else "rw"))
    return out


def test_stack_has_loki_grafana_and_demo(compose: dict[str, Any]) -> None:
    assert {"loki", "grafana", "demo"} <= set(compose["services"])
    assert "version" not in compose, "the version key is obsolete in the Compose specification"


def test_every_image_is_pinned_to_a_version(compose: dict[str, Any]) -> None:
    built_here = {s["image"] for s in compose["services"].values() if "build" in s}
    for name, service in compose["services"].items():
        image = service.get("image")
        if image is None:
            assert "build" in service, f"{name}: neither image nor build"
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: {image} has no tag"
        if "build" not in service and image not in built_here:
            assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{name}: {image} is not pinned"
        assert tag != "latest"
    assert re.fullmatch(r"grafana/loki:3\.7\.\d+", _service(compose, "loki")["image"])
    assert re.fullmatch(r"grafana/grafana:1[23]\.\d+\.\d+", _service(compose, "grafana")["image"])


def test_loki_runs_the_repo_config_read_only_with_env_expansion(
        compose: dict[str, Any]) -> None:
    loki = _service(compose, "loki")
    command = loki["command"]
    assert isinstance(command, list)
    (config_flag,) = [c for c in command if c.startswith("-config.file=")]
    target = config_flag.removeprefix("-config.file=")
    assert "-config.expand-env=true" in command
    assert ("./loki/config.yaml", target, "ro") in _mounts(loki)
    assert (REPO / "loki" / "config.yaml").is_file()


def test_loki_data_lives_in_a_named_volume_where_its_config_puts_it(
        compose: dict[str, Any]) -> None:
    loki = _service(compose, "loki")
    data_dir = _env(loki)["LOKI_DATA_DIR"]
    config = (REPO / "loki" / "config.yaml").read_text(encoding="utf-8")
    assert "${LOKI_DATA_DIR:-" in config, "loki/config.yaml must read LOKI_DATA_DIR"
    volumes = {src: dst for src, dst, _ in _mounts(loki)}
    named = [src for src, dst in volumes.items() if dst == data_dir]
    assert named and not named[0].startswith((".", "/")), "the data directory is a named volume"
    assert named[0] in (compose.get("volumes") or {})


def test_loki_healthcheck_asks_ready_without_a_shell(compose: dict[str, Any]) -> None:
    check = _service(compose, "loki")["healthcheck"]
    test = check["test"]
    # the image is distroless: no sh, wget or curl; the loki binary checks /ready itself
    assert test[0] == "CMD"
    assert test[1] == "/usr/bin/loki" and "-health" in test
    assert any(arg.startswith("-health.url=") and arg.endswith(":3100/ready") for arg in test)
    assert {"interval", "timeout", "retries", "start_period"} <= set(check)


@pytest.mark.parametrize("name", ["grafana", "demo"])
def test_grafana_and_demo_wait_for_a_healthy_loki(compose: dict[str, Any], name: str) -> None:
    depends = _service(compose, name)["depends_on"]
    assert depends["loki"]["condition"] == "service_healthy"


def test_grafana_has_no_default_password_and_no_anonymous_access(
        compose: dict[str, Any]) -> None:
    env = _env(_service(compose, "grafana"))
    password = env["GF_SECURITY_ADMIN_PASSWORD"]
    match = _COMPOSE_VAR.fullmatch(password)
    assert match is not None and match.group(1) == "GRAFANA_ADMIN_PASSWORD"
    assert match.group(2) == ":?", "required, and not empty"
    assert "admin" not in (match.group(3) or "").split()
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_grafana_mounts_what_its_provisioning_expects(compose: dict[str, Any]) -> None:
    grafana = _service(compose, "grafana")
    mounts = {src: (dst, mode) for src, dst, mode in _mounts(grafana)}
    assert mounts["./grafana/provisioning"] == ("/etc/grafana/provisioning", "ro")
    providers = []
    for path in sorted((REPO / "grafana" / "provisioning" / "dashboards").glob("*.y*ml")):
        providers += yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]
    assert providers, "no dashboard provider in grafana/provisioning/dashboards/"
    for provider in providers:
        assert mounts["./grafana/dashboards"][0] == provider["options"]["path"]
    for src in mounts:
        if src.startswith("./"):
            assert (REPO / src).is_dir(), f"{src} is mounted but missing from the repo"
    assert list((REPO / "grafana" / "dashboards").glob("*.json"))


def test_grafana_gets_every_variable_its_provisioning_reads(compose: dict[str, Any]) -> None:
    env = _env(_service(compose, "grafana"))
    wanted: set[str] = set()
    for path in (REPO / "grafana" / "provisioning").rglob("*.y*ml"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.lstrip().startswith("#"):
                continue
            # Grafana expands $VAR and ${VAR} from its environment (alert templates use
            # lower-case $labels/$values, which are not environment variables)
            wanted |= {m for m in re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)\}", line)}
            wanted |= {m for m in re.findall(r"(?<!\$)\$([A-Z_][A-Z0-9_]*)\b", line)}
    assert wanted, "expected the provisioning files to read some variables"
    assert wanted <= set(env), f"not passed to grafana: {sorted(wanted - set(env))}"


def test_every_compose_variable_is_documented_in_env_example(
        compose: dict[str, Any], env_example: dict[str, str]) -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    used = {m.group(1): m.group(2) for m in _COMPOSE_VAR.finditer(text)}
    bare = set(_BARE_VAR.findall(text.replace("$$", "")))
    assert not bare, f"write ${{VAR}}, not $VAR: {sorted(bare)}"
    assert used, "compose reads no variable?"
    missing = sorted(set(used) - set(env_example))
    assert not missing, f"used in docker-compose.yml but not in .env.example: {missing}"
    example_text = ENV_EXAMPLE.read_text(encoding="utf-8")
    for name in env_example:
        block = example_text.split(f"\n{name}=")[0].rstrip().splitlines()
        assert block and block[-1].startswith("#"), f"{name} in .env.example has no comment"


# --------------------------------------------------------------------------- secrets


#: names of .env.example's secrets: whoever holds one logs in, or posts to a channel
_SECRET_NAME = re.compile(r"PASSWORD$|TOKEN$|WEBHOOK_URL$")


def refused_by(compose_text: str, env: dict[str, str]) -> list[str]:
    """The required variables (``${VAR:?...}``, ``${VAR?...}``) compose would refuse to start
    without, given ``env`` (what an env file sets): ``:?`` refuses unset or empty, ``?``
    unset only."""
    refused = []
    for match in _COMPOSE_VAR.finditer(compose_text.replace("$$", "")):
        name, op = match.group(1), match.group(2)
        if (op == ":?" and not env.get(name)) or (op == "?" and name not in env):
            refused.append(name)
    return sorted(set(refused))


def test_env_example_holds_no_usable_secret(env_example: dict[str, str]) -> None:
    secrets = {name: value for name, value in env_example.items() if _SECRET_NAME.search(name)}
    assert {"GRAFANA_ADMIN_PASSWORD", "MINIO_ROOT_PASSWORD", "LOKI_GATEWAY_PASSWORD",
            "LOKI_GATEWAY_ADMIN_PASSWORD"} <= set(secrets)
    assert {name: value for name, value in secrets.items() if value} == {}


@pytest.mark.parametrize(("path", "passwords"), [
    (COMPOSE, {"GRAFANA_ADMIN_PASSWORD"}),
    (SCALE_COMPOSE, {"GRAFANA_ADMIN_PASSWORD", "MINIO_ROOT_PASSWORD", "LOKI_GATEWAY_PASSWORD",
                     "LOKI_GATEWAY_ADMIN_PASSWORD"}),
])
def test_compose_refuses_to_start_on_env_example_alone(
        path: Path, passwords: set[str], env_example: dict[str, str]) -> None:
    text = path.read_text(encoding="utf-8")
    assert set(refused_by(text, env_example)) == passwords
    # each one is required wherever the file reads it: no use of it falls back to a default
    for name in passwords:
        ops = {m.group(2) for m in _COMPOSE_VAR.finditer(text) if m.group(1) == name}
        assert ops == {":?"}, f"{path.name}: {name} is read with {ops}"


def _first_command() -> str:
    """The first command line of README's first ```bash block (comments skipped)."""
    block = README.read_text(encoding="utf-8").split("```bash\n", 1)[1].split("```", 1)[0]
    return next(line for line in block.splitlines() if line.strip()
                and not line.lstrip().startswith("#"))


def _run_first_command(where: Path) -> tuple[dict[str, str], list[str]]:
    """README's first command in ``where`` (holding a copy of .env.example), with a stand-in
    ``docker`` that records its arguments: the .env written, and docker's argument lists."""
    bin_dir = where / "bin"
    bin_dir.mkdir(exist_ok=True)
    docker = bin_dir / "docker"
    docker.write_text('#!/bin/sh\necho "$*" >> "$DOCKER_CALLS"\n')
    docker.chmod(0o755)
    shutil.copyfile(ENV_EXAMPLE, where / ".env.example")
    calls = where / "docker-calls"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "DOCKER_CALLS": str(calls),
           "HOME": str(where)}
    done = subprocess.run(["bash", "-c", _first_command()], cwd=where, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    values = {}
    for line in (where / ".env").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value.strip("'\"")
    return values, calls.read_text(encoding="utf-8").splitlines()


def test_readme_first_command_writes_every_password_and_starts_the_stack(
        tmp_path: Path, env_example: dict[str, str]) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: README's first command uses it")
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    written, calls = _run_first_command(first)
    assert calls == ["compose up -d --build"]
    # .env is .env.example, comments and all, with a value in each empty password line
    example = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    env_lines = (first / ".env").read_text(encoding="utf-8").splitlines()
    assert len(env_lines) == len(example)
    assert [a for a, b in zip(env_lines, example, strict=True) if a != b] == [
        line for line in env_lines if re.match(r"^[A-Z_]+_PASSWORD=.", line)]
    passwords = {n: v for n, v in written.items() if n.endswith("_PASSWORD")}
    assert set(passwords) == {n for n in env_example if n.endswith("_PASSWORD")}
    assert all(re.fullmatch(r"[0-9a-f]{32}", v) for v in passwords.values()), passwords
    assert len(set(passwords.values())) == len(passwords), "each password its own"
    # both compose files start on it
    for path in (COMPOSE, SCALE_COMPOSE):
        assert refused_by(path.read_text(encoding="utf-8"), written) == [], path.name
    # random: another checkout gets other passwords
    other, _ = _run_first_command(second)
    assert not set(passwords.values()) & {other[n] for n in passwords}
    # run again, it keeps .env (Grafana keeps the admin password of its first start)
    again, calls = _run_first_command(first)
    assert again == written and calls[-1] == "compose up -d --build"


def test_demo_is_built_from_the_dockerfile_and_sends_to_loki(compose: dict[str, Any]) -> None:
    demo = _service(compose, "demo")
    build = demo["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    assert (REPO / context / "Dockerfile").is_file()
    command = demo["command"]
    assert command[0] == "demo" and "--forever" in command
    env = _env(demo)
    assert env["LOKI_URL"] == "http://loki:3100"
    spool = env["SHIPPER_SPOOL_DIR"]
    assert any(dst == spool and src in compose["volumes"] for src, dst, _ in _mounts(demo))


def test_named_volumes_are_declared_and_used(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    used = {src for service in compose["services"].values() for src, _, _ in _mounts(service)
            if not src.startswith((".", "/"))}
    assert used == declared


def test_the_sidecar_tails_the_shop_log_volume_with_its_own_state(
        compose: dict[str, Any]) -> None:
    shop, sidecar = _service(compose, "shop"), _service(compose, "sidecar")
    assert shop["command"][0] == "demo" and "--file" in shop["command"]
    log_file = shop["command"][shop["command"].index("--file") + 1]
    assert "LOKI_URL" not in _env(shop)  # the file is the shop's only output
    shop_mounts = {dst: src for src, dst, _ in _mounts(shop)}
    side_mounts = {dst: (src, mode) for src, dst, mode in _mounts(sidecar)}
    log_dir = str(Path(log_file).parent)
    assert side_mounts[log_dir] == (shop_mounts[log_dir], "ro")
    assert sidecar["command"] == ["sidecar", "--config", "/etc/shipper/sidecar.yaml"]
    config_src, _ = side_mounts["/etc/shipper/sidecar.yaml"]
    config = yaml.safe_load((REPO / config_src).read_text(encoding="utf-8"))
    assert any(Path(log_file).match(p) for s in config["sources"] for p in s["paths"])
    state = str(Path(config["positions_file"]).parent)
    assert side_mounts[state][0] in compose["volumes"]
    assert config["spool_dir"].startswith(state)
    assert _env(sidecar)["LOKI_URL"] == "http://loki:3100"
    assert _service(compose, "demo")["build"]["args"]["EXTRAS"] == "sidecar"
    # healthy once ready (a healthcheck gates depends_on: condition: service_healthy)
    assert f"http://{config['metrics_listen']}/ready'" in " ".join(
        sidecar["healthcheck"]["test"])


# --------------------------------------------------------------------------- the image


def _dockerfile() -> list[str]:
    """Instructions, with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_builds_a_small_non_root_image_of_the_package() -> None:
    lines = _dockerfile()
    froms = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert froms and all(f == "python:3.11-slim" for f in froms)
    users = [(i, line.split()[1]) for i, line in enumerate(lines) if line.startswith("USER ")]
    assert users and users[-1][1] not in ("root", "0")
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    assert users[-1][0] > last_from, "the final image must switch to the unprivileged user"
    entry = [line for line in lines if line.startswith("ENTRYPOINT ")]
    assert entry == ['ENTRYPOINT ["shipper"]']
    text = "\n".join(lines)
    assert "[test]" not in text and "[all" not in text and "requirements" not in text
    assert re.search(r"pip (wheel|install)\b", text)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; ``!`` re-includes; a
    pattern that matches a directory matches everything under it."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.removeprefix("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*|\*|\?)", glob):
            regex += {"**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(re.fullmatch(regex, p) for p in prefixes):
            result = not negate
    return result


def test_dockerignore_keeps_the_build_context_to_the_package() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]
    for path in [".venv/bin/python", ".git/HEAD", "tests/logql/node_modules/x/index.js",
                 "shipper/__pycache__/demo.cpython-311.pyc", ".mypy_cache/3.11/x.json",
                 ".ruff_cache/x", ".pytest_cache/v/x", ".env", "shipper.egg-info/PKG-INFO",
                 "tests/admin/test_demo.py", "bench/run.py", "grafana/dashboards/overview.json"]:
        assert _ignored(path, patterns), f"{path} would be sent to the build"
    for path in ["pyproject.toml", "README.md", "shipper/cli/demo/__init__.py", "shipper/py.typed",
                 "shipper/sidecar/__init__.py"]:
        assert not _ignored(path, patterns), f"{path} is needed by the build"
    copied = [line.split()[1] for line in _dockerfile() if line.startswith("COPY ")
              and "--from" not in line]
    for src in copied:
        assert not _ignored(src, patterns), f"the Dockerfile copies {src}, which is ignored"
