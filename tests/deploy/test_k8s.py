"""k8s/: the grafana/loki Helm values, the sidecar manifests and Grafana's kustomization, checked
as files (no cluster and no Helm here).

The values must give Loki the same schema, limits, retention and deletion as loki/config.yaml,
with the retention block exactly as loki/retention.yaml renders it for Helm; the sidecar
manifests must mount what their config names; Grafana's ConfigMaps must carry the repository's
own provisioning files, mounted where docker compose mounts them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipper.cli.retention import RetentionPolicy
from tests.deploy.test_loki_config import _block, known_keys, unknown_keys  # noqa: F401
from tests.support.lokiconfig import CONFIG_PATH, RETENTION_PATH, expand_env

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
VALUES = K8S / "loki-values.yaml"
GATEWAY = "http://loki-gateway.loki.svc.cluster.local"
# Query settings the chart sets in loki.limits_config by default; kept in the values file.
_CHART_QUERY_LIMITS = {"max_cache_freshness_per_query", "split_queries_by_interval",
                       "query_timeout", "volume_enabled"}


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(VALUES.read_text(encoding="utf-8"))
    return data


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def test_every_manifest_is_yaml_with_kind_and_name() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert {p.relative_to(K8S).as_posix() for p in files} >= {
        "loki-values.yaml", "sidecar/daemonset.yaml", "sidecar/sidecar-container.yaml",
        "grafana/kustomization.yaml", "grafana/deployment.yaml"}
    for path in files:
        if path.name in ("loki-values.yaml", "kustomization.yaml"):
            continue
        for doc in _docs(path):
            assert doc["apiVersion"] and doc["kind"], path
            assert re.fullmatch(r"[a-z0-9-]+", doc["metadata"]["name"]), path


# --------------------------------------------------------------------------- Helm values


def test_values_deploy_simple_scalable_on_s3(values: dict[str, Any]) -> None:
    assert values["deploymentMode"] == "SimpleScalable"
    assert values["singleBinary"]["replicas"] == 0
    assert values["write"]["replicas"] >= 2
    assert values["read"]["replicas"] >= 2
    assert values["backend"]["replicas"] >= 1
    assert values["gateway"]["enabled"] is True
    loki = values["loki"]
    assert loki["storage"]["type"] == "s3"
    assert set(loki["storage"]["bucketNames"]) == {"chunks", "ruler", "admin"}
    (period,) = loki["schemaConfig"]["configs"]
    assert (period["store"], period["schema"], period["object_store"]) == ("tsdb", "v13", "s3")
    compactor = loki["compactor"]
    assert compactor["retention_enabled"] is True
    assert compactor["delete_request_store"] == "s3"


def test_secrets_come_from_the_environment_and_every_pod_expands_it(
        values: dict[str, Any]) -> None:
    s3 = values["loki"]["storage"]["s3"]
    assert s3["accessKeyId"] == "${LOKI_S3_ACCESS_KEY_ID}"
    assert s3["secretAccessKey"] == "${LOKI_S3_SECRET_ACCESS_KEY}"
    for target in ("write", "read", "backend"):
        assert "-config.expand-env=true" in values[target]["extraArgs"]
        assert {"secretRef": {"name": "loki-s3"}} in values[target]["extraEnvFrom"]


def test_values_keys_exist_in_loki_3_7(values: dict[str, Any],
                                       known_keys: dict[str, Any]) -> None:  # noqa: F811
    loki = values["loki"]
    as_config = {"limits_config": loki["limits_config"], "compactor": loki["compactor"],
                 "schema_config": loki["schemaConfig"], "analytics": loki["analytics"]}
    assert list(unknown_keys(as_config, known_keys)) == []


def test_values_limits_are_the_single_binarys(values: dict[str, Any]) -> None:
    single = yaml.safe_load(expand_env(CONFIG_PATH.read_text(encoding="utf-8"), {}))
    helm_limits = {k: v for k, v in values["loki"]["limits_config"].items()
                   if k not in _CHART_QUERY_LIMITS}
    assert helm_limits == single["limits_config"]
    compactor = {k: v for k, v in single["compactor"].items() if k != "working_directory"}
    compactor["delete_request_store"] = "s3"
    assert values["loki"]["compactor"] == compactor


def test_values_retention_block_is_what_retention_yaml_renders_for_helm(
        tmp_path: Path) -> None:
    """Fails when k8s/loki-values.yaml and loki/retention.yaml disagree: run
    `shipper retention render --target helm --write k8s/loki-values.yaml`."""
    text = VALUES.read_text(encoding="utf-8")
    policy = RetentionPolicy.load(RETENTION_PATH)
    assert _block(text) == policy.render("    ", "helm")
    limits = yaml.safe_load(text)["loki"]["limits_config"]
    assert {k: limits[k] for k in ("retention_period", "retention_stream")} == policy.limits()
    copy = tmp_path / VALUES.name
    shutil.copyfile(VALUES, copy)
    assert policy.render_into(copy, "helm") is False
    stale = text.replace("period: 30d", "period: 14d", 1)
    assert _block(stale) != policy.render("    ", "helm")


# --------------------------------------------------------------------------- the sidecar


def _pod_and_config(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    docs = {d["kind"]: d for d in _docs(path)}
    config = yaml.safe_load(docs["ConfigMap"]["data"]["sidecar.yaml"])
    workload = docs.get("DaemonSet") or docs["Deployment"]
    spec = workload["spec"]["template"]["spec"]
    containers = spec.get("initContainers", []) + spec["containers"]
    (sidecar,) = [c for c in containers if c.get("args", [])[:1] == ["sidecar"]]
    return spec, sidecar, config


@pytest.mark.parametrize("name", ["daemonset.yaml", "sidecar-container.yaml"])
def test_sidecar_manifest_mounts_what_its_config_names(name: str) -> None:
    spec, sidecar, config = _pod_and_config(K8S / "sidecar" / name)
    assert config["loki"]["url"] == GATEWAY
    assert config["service"]
    (source,) = config["sources"]
    assert (source["type"], source["format"]) == ("file", "json")
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    args = sidecar["args"]
    assert args[:2] == ["sidecar", "--config"]
    config_dir = str(Path(args[2]).parent)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "configMap" in volumes[mounts[config_dir]["name"]]

    def mount_of(path: str) -> dict[str, Any]:
        found = [m for p, m in mounts.items() if Path(path).is_relative_to(p)]
        assert found, f"{path} is on no volume"
        return found[0]

    for pattern in source["paths"]:
        mount_of(pattern)
    for key in ("spool_dir", "positions_file"):
        assert not mount_of(config[key]).get("readOnly"), f"{key} must be writable"
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    port = int(config["metrics_listen"].rsplit(":", 1)[1])
    assert config["metrics_listen"].startswith("0.0.0.0:"), "the kubelet probes the pod's IP"
    assert {"name": "metrics", "containerPort": port} in sidecar["ports"]
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert spec["terminationGracePeriodSeconds"] >= 10


def test_sidecar_container_starts_before_and_stops_after_the_app() -> None:
    spec, sidecar, _ = _pod_and_config(K8S / "sidecar" / "sidecar-container.yaml")
    assert sidecar in spec["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    (app,) = spec["containers"]
    shared = {m["name"] for m in app["volumeMounts"]} & {m["name"] for m in sidecar["volumeMounts"]}
    assert shared and all(v["name"] not in shared or "emptyDir" in v for v in spec["volumes"])


# --------------------------------------------------------------------------- Grafana


def _kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / "grafana" / "kustomization.yaml").read_text())
    return data


def test_grafana_configmaps_carry_every_provisioning_file_of_the_repo() -> None:
    generated = {g["name"]: [(K8S / "grafana" / f).resolve() for f in g["files"]]
                 for g in _kustomization()["configMapGenerator"]}
    listed = {p for files in generated.values() for p in files}
    wanted = set((REPO / "grafana" / "provisioning").rglob("*.yaml"))
    wanted |= set((REPO / "grafana" / "dashboards").glob("*.json"))
    assert listed == {p.resolve() for p in wanted}
    # one folder per ConfigMap (a ConfigMap is one flat directory)
    assert all(len({p.parent for p in files}) == 1 for files in generated.values())


def test_grafana_mounts_each_folder_where_compose_does() -> None:
    docs = {d["kind"]: d for d in _docs(K8S / "grafana" / "deployment.yaml")}
    spec = docs["Deployment"]["spec"]["template"]["spec"]
    (grafana,) = spec["containers"]
    volumes = {v["name"]: v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v}
    mounted = {volumes[m["name"]]: m["mountPath"] for m in grafana["volumeMounts"]
               if m["name"] in volumes}
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["grafana"]
    compose_mounts = dict(v.split(":")[:2] for v in compose["volumes"])
    for generator in _kustomization()["configMapGenerator"]:
        folder = Path(generator["files"][0]).parent.as_posix().removeprefix("../../")
        under = next(src for src in compose_mounts if folder.startswith(src.removeprefix("./")))
        expected = compose_mounts[under] + folder.removeprefix(under.removeprefix("./"))
        assert mounted[generator["name"]] == expected
    env = {e["name"]: e for e in grafana["env"]}
    assert env["GRAFANA_LOKI_URL"]["value"] == GATEWAY
    provisioning_vars = {"GRAFANA_LOKI_URL", "GRAFANA_LOKI_USER", "GRAFANA_LOKI_PASSWORD",
                         "GRAFANA_TRACE_URL", "GRAFANA_TRACE_DATASOURCE_UID",
                         "SLACK_WEBHOOK_URL"}
    assert provisioning_vars <= set(env)
    assert "secretKeyRef" in env["GF_SECURITY_ADMIN_PASSWORD"]["valueFrom"]


def test_kustomize_builds_the_configmaps_from_the_same_files() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomization is checked as text only")
    done = subprocess.run([kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone",
                           str(K8S / "grafana")], check=False, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(done.stdout)}
    maps = {name.rsplit("-", 1)[0]: d for (kind, name), d in docs.items() if kind == "ConfigMap"}
    for generator in _kustomization()["configMapGenerator"]:
        data = maps[generator["name"]]["data"]
        for file in generator["files"]:
            path = (K8S / "grafana" / file).resolve()
            assert data[path.name] == path.read_text(encoding="utf-8")
    deployment = docs[("Deployment", "grafana")]
    names = {v["configMap"]["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]
             if "configMap" in v}
    assert names == {d["metadata"]["name"] for d in maps.values()}, "hashed names are wired"


@pytest.mark.parametrize("name", ["daemonset.yaml", "sidecar-container.yaml"])
def test_sidecar_manifest_config_passes_the_sidecars_own_check(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from shipper.cli.main import main

    _, _, config = _pod_and_config(K8S / "sidecar" / name)
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["sidecar", "--config", str(path), "--check"]) == 0, capsys.readouterr().err
    assert ": ok: " in capsys.readouterr().out


# --------------------------------------------------------------------------- who reaches Loki

POLICIES = K8S / "network-policy.yaml"
#: the labels the grafana/loki chart gives the pods of the release "loki" (helm install loki)
CHART_LOKI = {"app.kubernetes.io/name": "loki", "app.kubernetes.io/instance": "loki"}
GATEWAY_POD = {**CHART_LOKI, "app.kubernetes.io/component": "gateway"}
CLIENT_LABEL = ("shipper/loki-client", "true")


def _policies() -> dict[str, dict[str, Any]]:
    docs = _docs(POLICIES)
    assert all(d["kind"] == "NetworkPolicy" for d in docs)
    return {d["metadata"]["name"]: d["spec"] for d in docs}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes' label selector: matchLabels and In / NotIn / Exists / DoesNotExist."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _admits(peers: list[dict[str, Any]], labels: dict[str, str], same_namespace: bool) -> bool:
    """Whether a pod with ``labels`` is one of ``peers`` (a rule's from / to; a rule without
    one admits every pod)."""
    for peer in peers:
        if "ipBlock" in peer:
            continue
        if "namespaceSelector" not in peer and not same_namespace:
            continue
        if _selects(peer.get("podSelector", {}), labels):
            return True
    return False


def _may_connect(policies: dict[str, dict[str, Any]], source: dict[str, str],
                 target: dict[str, str], port: int, same_namespace: bool = True) -> bool:
    """What the policies let a pod labelled ``source`` open to one labelled ``target``."""
    selecting = [p for p in policies.values() if _selects(p["podSelector"], target)
                 and "Ingress" in p["policyTypes"]]
    if selecting and not any(
            ("from" not in rule or _admits(rule["from"], source, same_namespace))
            and any(p.get("port") == port for p in rule.get("ports", [{"port": port}]))
            for p in selecting for rule in p.get("ingress", [])):
        return False
    leaving = [p for p in policies.values() if _selects(p["podSelector"], source)
               and "Egress" in p["policyTypes"]]
    return not leaving or any(
        ("to" not in rule or _admits(rule["to"], target, same_namespace))
        and any(p.get("port") == port for p in rule.get("ports", [{"port": port}]))
        for p in leaving for rule in p.get("egress", []))


def _pod_labels(path: Path) -> dict[str, str]:
    docs = {d["kind"]: d for d in _docs(path)}
    workload = docs.get("DaemonSet") or docs["Deployment"]
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def test_only_the_shippers_pods_and_grafana_reach_the_gateway(values: dict[str, Any]) -> None:
    policies = _policies()
    port = values["gateway"].get("containerPort", 8080)  # the chart's default
    sidecar = _pod_labels(K8S / "sidecar" / "daemonset.yaml")
    app_with_sidecar = _pod_labels(K8S / "sidecar" / "sidecar-container.yaml")
    grafana = _pod_labels(K8S / "grafana" / "deployment.yaml")
    assert _may_connect(policies, sidecar, GATEWAY_POD, port)
    assert _may_connect(policies, app_with_sidecar, GATEWAY_POD, port, same_namespace=False)
    assert _may_connect(policies, grafana, GATEWAY_POD, port)
    for stranger in ({"app": "web"}, {"app.kubernetes.io/name": "grafana"}):
        assert not _may_connect(policies, stranger, GATEWAY_POD, port, same_namespace=False)
    assert not _may_connect(policies, {"app": "web"}, GATEWAY_POD, port)
    assert not _may_connect(policies, sidecar, GATEWAY_POD, 9095), "the gateway's port only"


@pytest.mark.parametrize("component", ["write", "read", "backend"])
def test_no_client_reaches_loki_around_the_gateway(component: str) -> None:
    policies = _policies()
    loki = {**CHART_LOKI, "app.kubernetes.io/component": component}
    for client in (_pod_labels(K8S / "sidecar" / "daemonset.yaml"),
                   _pod_labels(K8S / "grafana" / "deployment.yaml"), {"app": "web"}):
        assert not _may_connect(policies, client, loki, 3100), client
    assert _may_connect(policies, GATEWAY_POD, loki, 3100)
    for other in ("write", "read", "backend"):  # memberlist, gRPC, queries among themselves
        peer = {**CHART_LOKI, "app.kubernetes.io/component": other}
        assert _may_connect(policies, peer, loki, 7946) and _may_connect(policies, peer, loki,
                                                                          9095)


def test_the_sidecar_reaches_only_the_gateway_and_dns() -> None:
    policies = _policies()
    sidecar = _pod_labels(K8S / "sidecar" / "daemonset.yaml")
    assert _may_connect(policies, sidecar, GATEWAY_POD, 8080)
    dns = {"k8s-app": "kube-dns"}
    assert _may_connect(policies, sidecar, dns, 53, same_namespace=False)
    for elsewhere, port in (({"app.kubernetes.io/component": "write", **CHART_LOKI}, 3100),
                            ({"app": "database"}, 5432), ({"app": "web"}, 443)):
        assert not _may_connect(policies, sidecar, elsewhere, port), elsewhere
    # nothing reaches the sidecar but its /healthz and /metrics port
    assert _may_connect(policies, {"app": "prometheus"}, sidecar, 3501)
    assert not _may_connect(policies, {"app": "web"}, sidecar, 3500)


@pytest.mark.parametrize("name", ["daemonset.yaml", "sidecar-container.yaml"])
def test_sidecar_pods_log_in_to_the_gateway_and_carry_the_client_label(name: str) -> None:
    _, sidecar, config = _pod_and_config(K8S / "sidecar" / name)
    assert _pod_labels(K8S / "sidecar" / name)[CLIENT_LABEL[0]] == CLIENT_LABEL[1]
    # LOKI_USERNAME / LOKI_PASSWORD from a Secret, never in the ConfigMap
    assert {"secretRef": {"name": "shipper-loki-auth"}} in sidecar["envFrom"]
    assert not {"username", "password", "bearer_token"} & set(config["loki"])


def test_grafana_logs_in_to_the_gateway_from_the_clients_secret() -> None:
    docs = {d["kind"]: d for d in _docs(K8S / "grafana" / "deployment.yaml")}
    (grafana,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in grafana["env"]}
    for name, key in (("GRAFANA_LOKI_USER", "LOKI_USERNAME"),
                      ("GRAFANA_LOKI_PASSWORD", "LOKI_PASSWORD")):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "shipper-loki-auth",
                                                          "key": key}


# --------------------------------------------------------------------------- the Helm gateway


def test_the_helm_gateway_asks_for_basic_auth_and_deletion_for_the_admin(
        values: dict[str, Any]) -> None:
    gateway = values["gateway"]
    assert gateway["enabled"] is True
    assert gateway["basicAuth"] == {"enabled": True, "existingSecret": "loki-gateway-auth"}
    snippet = gateway["nginxConfig"]["httpSnippet"]
    assert re.search(r"~\^/loki/api/v1/delete\s+/etc/nginx/secrets/\.htpasswd-admin;", snippet)
    assert re.search(r"default\s+/etc/nginx/secrets/\.htpasswd;", snippet)
    assert gateway["nginxConfig"]["locationSnippet"].strip() == \
        "auth_basic_user_file $loki_gateway_users;"
    # the canary would need the password on its command line; the chart's test needs the canary
    assert values["lokiCanary"]["enabled"] is False and values["test"]["enabled"] is False


def _chart_like_nginx_conf(values: dict[str, Any], port: int, upstream: str,
                           secrets: Path) -> str:
    """The parts of the server block the grafana/loki chart (6.x, ``loki.nginxFile`` in
    templates/_helpers.tpl) writes with basicAuth enabled that matter here: the server's
    ``auth_basic`` with /etc/nginx/secrets/.htpasswd, the health location that turns it off,
    and locationSnippet in every location; each location proxies to ``upstream``."""
    config = values["gateway"]["nginxConfig"]
    snippet = config["locationSnippet"]
    locations = ["= /loki/api/v1/push", "= /otlp/v1/logs", "= /loki/api/v1/delete",
                 "= /loki/api/v1/rules", "^~ /loki/api/v1/rules/", "= /flush",
                 "^~ /ingester/", "= /ring", "= /distributor/ring", "= /memberlist",
                 "= /config", "= /loki/api/v1/tail", "^~ /loki/api/v1/"]
    body = "\n".join(f"    location {loc} {{\n      {snippet}\n"
                     f"      proxy_pass http://{upstream}$request_uri;\n    }}"
                     for loc in locations)
    text = f"""
daemon off;
pid {secrets.parent}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {secrets.parent}/body;
  proxy_temp_path {secrets.parent}/proxy;
  {config["httpSnippet"]}
  server {{
    listen 127.0.0.1:{port};
    auth_basic           "Loki";
    auth_basic_user_file /etc/nginx/secrets/.htpasswd;
    location = / {{
      {snippet}
      return 200 'OK';
      auth_basic off;
    }}
{body}
  }}
}}
"""
    return text.replace("/etc/nginx/secrets/", f"{secrets}/")


def test_the_helm_gateway_snippets_in_a_real_nginx_keep_deletion_to_the_admin(
        values: dict[str, Any], tmp_path: Path) -> None:
    import base64

    import urllib3

    from tests.support.fakeloki import FakeLoki
    from tests.support.lokicluster import free_ports

    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file()
                                      else None)
    openssl = shutil.which("openssl")
    if nginx is None or openssl is None:
        pytest.skip("nginx or openssl is not installed: the Helm snippets are checked as text")
    client, admin = ("shipper", "client-password-x1"), ("admin", "admin-password-x2")

    def hashed(password: str) -> str:  # as docs/scale.md makes the Secret
        return subprocess.run([openssl, "passwd", "-6", password], capture_output=True,
                              text=True, check=True).stdout.strip()

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / ".htpasswd").write_text(f"{client[0]}:{hashed(client[1])}\n"
                                       f"{admin[0]}:{hashed(admin[1])}\n")
    (secrets / ".htpasswd-admin").write_text(f"{admin[0]}:{hashed(admin[1])}\n")
    loki = FakeLoki()
    (port,) = free_ports(1)
    conf = tmp_path / "nginx.conf"
    conf.write_text(_chart_like_nginx_conf(values, port, f"127.0.0.1:{loki.port}", secrets))
    checked = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf)],
                             capture_output=True, text=True, timeout=30, check=False)
    assert checked.returncode == 0, checked.stderr
    globals_ = "user root;" if os.geteuid() == 0 else ""  # the files are root's here
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf)]
                            + (["-g", globals_] if globals_ else []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pool = urllib3.PoolManager()
    url = f"http://127.0.0.1:{port}"

    def status(method: str, path: str, login: tuple[str, str] | None) -> int:
        headers = {"Authorization": "Basic " + base64.b64encode(
            f"{login[0]}:{login[1]}".encode()).decode()} if login else {}
        return pool.request(method, url + path, headers=headers, retries=False).status

    try:
        for _ in range(100):
            try:
                if status("GET", "/", None) == 200:
                    break
            except urllib3.exceptions.HTTPError:
                time.sleep(0.05)
        for path in ("/loki/api/v1/push", "/loki/api/v1/labels", "/config"):
            assert status("GET", path, None) == 401, path
            assert status("GET", path, client) != 401, path
            assert status("GET", path, admin) != 401, path
        for method, path in (("POST", "/loki/api/v1/delete"), ("GET", "/loki/api/v1/delete"),
                             ("DELETE", "/loki/api/v1/delete"), ("POST", "/flush"),
                             ("POST", "/ingester/shutdown"), ("POST", "/loki/api/v1/rules/x"),
                             ("GET", "/ring"), ("GET", "/distributor/ring")):
            before = len(loki.requests)
            assert status(method, path, None) == 401, path
            assert status(method, path, client) == 401, path
            assert len(loki.requests) == before, f"{path} reached Loki"
            assert status(method, path, admin) != 401, path
    finally:
        proc.terminate()
        proc.wait(10)
        loki.stop()
