"""k8s/: the grafana/loki Helm values, the sidecar manifests and Grafana's kustomization, checked
as files (no cluster and no Helm here).

The values must give Loki the same schema, limits, retention and deletion as loki/config.yaml,
with the retention block exactly as loki/retention.yaml renders it for Helm; the sidecar
manifests must mount what their config names; Grafana's ConfigMaps must carry the repository's
own provisioning files, mounted where docker compose mounts them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
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
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
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
    provisioning_vars = {"GRAFANA_LOKI_URL", "GRAFANA_TRACE_URL", "SLACK_WEBHOOK_URL"}
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
