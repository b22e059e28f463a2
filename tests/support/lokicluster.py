"""A real Loki in simple scalable mode on this machine: moto as S3, the write, read and backend
targets from loki/config.scale.yaml, and (when nginx is installed) the gateway from
loki/gateway/nginx.conf with its user files written by loki/gateway/auth.sh, as the container
does, all on free loopback ports in one temporary directory.

Used by tests/live/test_scalable_live.py (when ``LOKI_BIN`` names a Loki binary) and by
bench/run.py. Everything started here is stopped, and the directory removed, on exit.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import urllib3

ROOT = Path(__file__).resolve().parents[2]
SCALE_CONFIG = ROOT / "loki" / "config.scale.yaml"
GATEWAY_CONF = ROOT / "loki" / "gateway" / "nginx.conf"
GATEWAY_AUTH = ROOT / "loki" / "gateway" / "auth.sh"
#: the gateway's two users here: (name, password) of the client (push, queries) and the admin
GATEWAY_USER = ("shipper", "client-password-of-the-tests")
GATEWAY_ADMIN = ("admin", "admin-password-of-the-tests")
TARGETS = ("backend", "read", "write")
BUCKET = "loki"
#: measured start-up to /ready: backend ~4 s, read ~10 s, write ~17 s (the ingester waits 15 s)
READY_TIMEOUT_S = 90.0


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on every address for TCP and UDP (memberlist uses both).

    Taken below the kernel's ephemeral range (ip_local_port_range): a port from that range
    can be handed to some process's outgoing connection between this check and Loki's bind,
    which happened here with Loki's own connections."""
    low = 32768
    with suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < count:
        port = rng.randrange(20000, min(low, 32768))
        if port in ports:
            continue
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind(("", port))
        except OSError:
            continue
        ports.append(port)
    return ports


def gateway_conf(write: list[str], read: list[str], backend: list[str], port: int,
                 run_dir: Path) -> str:
    """loki/gateway/nginx.conf with its upstreams, port and scratch paths replaced: the same
    routing rules compose runs, pointed at local processes."""
    text = GATEWAY_CONF.read_text(encoding="utf-8")
    for name, addrs in (("loki-write", write), ("loki-read", read), ("loki-backend", backend)):
        servers = "\n".join(f"        server {addr};" for addr in addrs)
        text, n = re.subn(rf"^\s*server {name}:3100;$", servers, text, flags=re.MULTILINE)
        assert n == 1, f"no 'server {name}:3100;' line in {GATEWAY_CONF}"
    text, n = re.subn(r"^(\s*)listen 3100;$", rf"\1listen 127.0.0.1:{port};", text,
                      flags=re.MULTILINE)
    assert n == 1, f"no 'listen 3100;' line in {GATEWAY_CONF}"
    return text.replace("/tmp/", f"{run_dir}/")


def write_gateway_auth(run_dir: Path, **environ: str) -> subprocess.CompletedProcess[str]:
    """Run loki/gateway/auth.sh as the container's entrypoint does, with the tests' users (or
    ``environ``'s LOKI_GATEWAY_* values): the user files go where :func:`gateway_conf`'s
    nginx.conf reads them, under ``run_dir``."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "LOKI_GATEWAY_AUTH_DIR": str(run_dir / "gateway-auth"),
           "LOKI_GATEWAY_USER": GATEWAY_USER[0], "LOKI_GATEWAY_PASSWORD": GATEWAY_USER[1],
           "LOKI_GATEWAY_ADMIN_USER": GATEWAY_ADMIN[0],
           "LOKI_GATEWAY_ADMIN_PASSWORD": GATEWAY_ADMIN[1], **environ}
    return subprocess.run(["sh", str(GATEWAY_AUTH)], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def nginx_argv(nginx: str, run_dir: Path, conf: Path) -> list[str]:
    """nginx in the foreground with ``conf``. As root, its workers run as root too: in the
    image they run as the user nginx, whose group auth.sh gives the user files; here there is
    no such user, and nobody (nginx's default) could not read them."""
    globals_ = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    return [nginx, "-p", str(run_dir), "-c", str(conf), "-g", globals_]


def with_login(url: str, login: tuple[str, str]) -> str:
    """``url`` with ``user:password@``: the shipper's clients send it as basic auth."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{login[0]}:{login[1]}@{rest}"


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class ScalableLoki:
    """URLs of the running deployment."""

    dir: Path
    s3_url: str = ""
    urls: dict[str, str] = field(default_factory=dict)
    #: the gateway's URL (it asks for basic auth: :data:`GATEWAY_USER`, :data:`GATEWAY_ADMIN`)
    gateway: str | None = None
    processes: list[Process] = field(default_factory=list)

    @property
    def write(self) -> str:
        return self.urls["write"]

    @property
    def read(self) -> str:
        return self.urls["read"]

    @property
    def backend(self) -> str:
        return self.urls["backend"]

    def process(self, name: str) -> Process:
        return next(p for p in self.processes if p.name == name)


def _stop(proc: Process, timeout: float = 30.0) -> None:
    if proc.popen.poll() is not None:
        return
    proc.popen.send_signal(signal.SIGTERM)  # what a deploy sends: Loki flushes and leaves
    try:
        proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.popen.kill()
        proc.popen.wait(10)


def _wait_ready(pool: urllib3.PoolManager, procs: list[Process], path: str,
                timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(procs)
    last: dict[str, str] = {}
    while pending and time.monotonic() < deadline:
        for proc in list(pending):
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n"
                                   f"{proc.tail()}")
            try:
                resp = pool.request("GET", proc.url + path, timeout=3, retries=False)
                if resp.status < 300:
                    pending.remove(proc)
                else:
                    last[proc.name] = f"{resp.status} {resp.data[:200]!r}"
            except urllib3.exceptions.HTTPError as exc:
                last[proc.name] = repr(exc)
        time.sleep(0.5)
    if pending:
        detail = "\n".join(f"{p.name}: {last.get(p.name)}\n{p.tail()}" for p in pending)
        raise RuntimeError(f"not ready after {timeout:.0f} s:\n{detail}")


def _spawn(stack: ExitStack, cluster: ScalableLoki, name: str, argv: list[str],
           env: Mapping[str, str] | None = None) -> Process:
    log = cluster.dir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                 env=dict(env) if env is not None else None,
                                 start_new_session=True)
    proc = Process(name, popen, log)
    cluster.processes.append(proc)
    stack.callback(_stop, proc)
    return proc


@contextmanager
def scalable_loki(loki_bin: str, *, gateway: bool = True,
                  extra_flags: tuple[str, ...] = ()) -> Iterator[ScalableLoki]:
    """Start S3 (moto), backend, read and write, and the gateway when nginx is installed and
    ``gateway`` is true; wait for /ready; stop everything (SIGTERM) and remove the directory
    on exit. ``extra_flags`` go to every Loki process (e.g. raised limits for benchmarks)."""
    run_dir = Path(tempfile.mkdtemp(prefix="shipper-scalable-"))
    cluster = ScalableLoki(dir=run_dir)
    pool = urllib3.PoolManager()
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, run_dir, True)
        (s3_port, gw_port, *ports) = free_ports(2 + 3 * len(TARGETS))
        moto = _spawn(stack, cluster, "s3", [
            sys.executable, "-c", "from moto.server import main; main()",
            "-H", "127.0.0.1", "-p", str(s3_port)])
        moto.url = cluster.s3_url = f"http://127.0.0.1:{s3_port}"
        _wait_ready(pool, [moto], "/", 30)
        resp = pool.request("PUT", f"{cluster.s3_url}/{BUCKET}")
        if resp.status != 200:
            raise RuntimeError(f"creating bucket {BUCKET}: {resp.status} {resp.data[:200]!r}")

        http = dict(zip(TARGETS, ports[0:3], strict=True))
        grpc = dict(zip(TARGETS, ports[3:6], strict=True))
        gossip = dict(zip(TARGETS, ports[6:9], strict=True))
        env = dict(
            os.environ,
            LOKI_S3_ENDPOINT=f"127.0.0.1:{s3_port}",
            LOKI_S3_BUCKET=BUCKET,
            LOKI_S3_ACCESS_KEY_ID="test",
            LOKI_S3_SECRET_ACCESS_KEY="test",
            LOKI_S3_FORCE_PATH_STYLE="true",
            LOKI_S3_INSECURE="true",
            LOKI_COMPACTOR_ADDRESS=f"http://127.0.0.1:{http['backend']}",
            LOKI_MEMBERLIST_JOIN=f"127.0.0.1:{gossip['backend']}",
            LOKI_INSTANCE_ADDR="127.0.0.1",
        )
        for target in TARGETS:
            proc = _spawn(stack, cluster, target, [
                loki_bin, f"-config.file={SCALE_CONFIG}", "-config.expand-env=true",
                f"-target={target}",
                f"-common.path-prefix={run_dir / target}",
                "-server.http-listen-address=127.0.0.1",
                f"-server.http-listen-port={http[target]}",
                "-server.grpc-listen-address=127.0.0.1",
                f"-server.grpc-listen-port={grpc[target]}",
                # no -memberlist.bind-addr: Loki reads list flags twice (before and after
                # the file), so the address would be bound twice ("address already in use");
                # memberlist binds all addresses, on a port checked free on all of them
                f"-memberlist.bind-port={gossip[target]}",
                "-memberlist.advertise-addr=127.0.0.1",
                # on one host each process must advertise its own port, not 7946
                f"-memberlist.advertise-port={gossip[target]}",
                *extra_flags,
            ], env)
            proc.url = cluster.urls[target] = f"http://127.0.0.1:{http[target]}"
        _wait_ready(pool, [cluster.process(t) for t in TARGETS], "/ready", READY_TIMEOUT_S)

        nginx = shutil.which("nginx") or (
            "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
        if gateway and nginx:
            conf = run_dir / "nginx.conf"
            conf.write_text(gateway_conf([cluster.write.removeprefix("http://")],
                                         [cluster.read.removeprefix("http://")],
                                         [cluster.backend.removeprefix("http://")],
                                         gw_port, run_dir))
            auth = write_gateway_auth(run_dir)
            if auth.returncode != 0:
                raise RuntimeError(f"loki/gateway/auth.sh failed: {auth.stderr}")
            proc = _spawn(stack, cluster, "gateway", nginx_argv(nginx, run_dir, conf))
            proc.url = cluster.gateway = f"http://127.0.0.1:{gw_port}"
            _wait_ready(pool, [proc], "/ready", 15)
        try:
            yield cluster
        finally:
            pool.clear()
