"""The rendered chart: schema-valid for Kubernetes 1.33, clean under checkov, identical to
k8s/rendered/, and the properties the design relies on (probes, security, mounts, mesh
routing rules)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from conftest import KUBE_VERSION, ROOT, by_kind, docs, render

WORKLOAD_KINDS = ("Deployment", "StatefulSet")
CRD = ROOT / "k8s" / "crds" / "execbridgeconfigs.execbridge.io.yaml"
BIN = Path(sys.executable).parent


def write(tmp_path: Path, mesh: str) -> Path:
    out = tmp_path / f"{mesh}.yaml"
    out.write_text(render(mesh))
    return out


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(o["metadata"]["name"], o["spec"]["template"]["spec"])
            for o in objects if o["kind"] in WORKLOAD_KINDS]


def test_rendered_manifests_in_k8s_match_a_fresh_render(mesh: str) -> None:
    checked_in = (ROOT / "k8s" / "rendered" / f"{mesh}.yaml").read_text()
    assert checked_in == render(mesh), f"k8s/rendered/{mesh}.yaml is stale: run `make chart-render`"


def test_every_manifest_is_valid_for_kubernetes_1_33_in_strict_mode(mesh: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "kubernetes-validate"), "-k", KUBE_VERSION, "--strict", "--quiet",
         str(write(tmp_path, mesh))],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_checkov_finds_no_failed_check(mesh: str, tmp_path: Path) -> None:
    write(tmp_path, mesh)
    done = subprocess.run(
        [str(BIN / "checkov"), "--config-file", str(ROOT / "deploy-tests" / "checkov.yaml"),
         "-d", str(tmp_path), "--output", "json"],
        capture_output=True, text=True, check=False,
    )
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [(c["check_id"], c["resource"]) for r in reports
              for c in r.get("results", {}).get("failed_checks", [])]
    assert failed == []
    assert done.returncode == 0, done.stderr


def test_probes_use_grpc_health_in_a_mesh_and_the_admin_port_under_native_tls(mesh: str) -> None:
    for name, spec in pod_specs(docs(render(mesh))):
        for c in spec["containers"]:
            for probe in ("livenessProbe", "readinessProbe"):
                action = c[probe]
                port = (action.get("grpc") or action.get("httpGet"))["port"]
                assert isinstance(port, int), f"{name} {probe} port {port!r}"
                if "operator" in name:
                    continue
                if mesh == "none":
                    # The kubelet cannot do the TLS handshake of native mode.
                    assert action["httpGet"]["port"] == c["ports"][1]["containerPort"], name
                else:
                    assert action["grpc"]["port"] == c["ports"][0]["containerPort"], name


def test_every_container_is_non_root_read_only_and_drops_all_capabilities(mesh: str) -> None:
    for name, spec in pod_specs(docs(render(mesh))):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert c["resources"]["requests"] and c["resources"]["limits"], name


def test_config_and_secrets_are_mounted_as_directories_never_with_subpath(mesh: str) -> None:
    text = render(mesh, "gateway.policy.existingSecret=gateway-policy")
    assert "subPath" not in text
    specs = dict(pod_specs(docs(text)))
    gateway = specs["execbridge-gateway"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in gateway["volumeMounts"]}
    assert mounts["policy"] == "/etc/execbridge/policy"
    assert mounts["config"] == "/etc/execbridge/config"
    assert ("tls" in mounts) == (mesh == "none"), "certificates mounted only in native TLS mode"


def test_the_executor_is_a_statefulset_with_a_journal_volume_and_a_headless_service() -> None:
    objects = docs(render("none", "executor.shards=3"))
    (sts,) = by_kind(objects, "StatefulSet")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "journal"
    headless = [s for s in by_kind(objects, "Service") if s["spec"].get("clusterIP") == "None"]
    assert [s["metadata"]["name"] for s in headless] == [sts["spec"]["serviceName"]]
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["EXECBRIDGE_EXECUTOR_SHARD__ID"]["value"] == "s$(POD_INDEX)"


def executor_audit(objects: list[dict[str, Any]]) -> tuple[list[str], dict[str, str], dict[str, Any]]:
    """The executor's claim templates, its mounts and the [audit] table of its config."""
    (sts,) = by_kind(objects, "StatefulSet")
    claims = [c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (config,) = [c["data"]["executor.toml"] for c in by_kind(objects, "ConfigMap") if "executor.toml" in c["data"]]
    return claims, mounts, tomllib.loads(config)["audit"]


def test_the_sqlite_audit_file_has_a_volume_of_its_own_apart_from_the_journal() -> None:
    objects = docs(render("none", "executor.audit.persistence.size=7Gi"))
    claims, mounts, audit = executor_audit(objects)
    assert claims == ["journal", "audit"]
    assert mounts["audit"] == "/var/lib/execbridge/audit"
    assert audit["path"] == "/var/lib/execbridge/audit/audit.sqlite"
    assert not audit["path"].startswith(mounts["journal"])
    assert audit["flush_interval_ms"] == 10
    (sts,) = by_kind(objects, "StatefulSet")
    assert sts["spec"]["volumeClaimTemplates"][1]["spec"]["resources"]["requests"]["storage"] == "7Gi"


def test_the_executors_history_retention_reaches_its_config() -> None:
    objects = docs(render("none", "executor.history.retainFinishedOrders=2500000", "executor.history.idempotencyWindowSecs=7200"))
    (config,) = [c["data"]["executor.toml"] for c in by_kind(objects, "ConfigMap") if "executor.toml" in c["data"]]
    shard = tomllib.loads(config)["shard"]
    # Whole integers, not the 2.5e+06 a float would render.
    assert shard == {"retain_finished_orders": 2500000, "idempotency_window_secs": 7200}


def test_the_executors_snapshot_interval_reaches_its_config() -> None:
    def journal(*settings: str) -> dict:
        objects = docs(render("none", *settings))
        (config,) = [c["data"]["executor.toml"] for c in by_kind(objects, "ConfigMap") if "executor.toml" in c["data"]]
        return tomllib.loads(config)["journal"]

    assert journal()["snapshot_every_records"] == 1000000
    assert journal("executor.journal.snapshotEveryRecords=25000000")["snapshot_every_records"] == 25000000
    assert journal("executor.journal.snapshotEveryRecords=0")["snapshot_every_records"] == 0


@pytest.mark.parametrize("setting", ["executor.audit.persistence.enabled=false", "executor.audit.sink=none"])
def test_without_an_sqlite_audit_volume_no_claim_is_made_and_the_default_path_stands(setting: str) -> None:
    claims, mounts, audit = executor_audit(docs(render("none", setting)))
    assert claims == ["journal"]
    assert "audit" not in mounts
    assert "path" not in audit


def test_hpas_scale_on_cpu_and_optionally_on_a_custom_metric() -> None:
    hpas = by_kind(docs(render("none", "gateway.autoscaling.customMetric.enabled=true")), "HorizontalPodAutoscaler")
    kinds = {h["metadata"]["name"]: [m["type"] for m in h["spec"]["metrics"]] for h in hpas}
    assert kinds == {"execbridge-gateway": ["Resource", "Pods"], "execbridge-marketdata": ["Resource"]}


def test_only_the_gateway_accepts_traffic_from_outside_the_release() -> None:
    policies = by_kind(docs(render("none")), "NetworkPolicy")
    names = {p["metadata"]["name"]: p for p in policies}
    gateway = names["execbridge-gateway-ingress"]["spec"]
    assert gateway["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    internal = names["execbridge-internal"]["spec"]["ingress"]
    # Non-release sources may reach only the admin ports (Prometheus), never gRPC.
    assert {p["port"] for p in internal[1]["ports"]} == {9101, 9102, 9103}
    assert "Ingress" in names["execbridge-default-deny"]["spec"]["policyTypes"]


def test_services_run_tls_mode_mesh_in_a_mesh_and_native_without_one(mesh: str) -> None:
    objects = docs(render(mesh))
    for cm in by_kind(objects, "ConfigMap"):
        if not cm["metadata"]["name"].endswith("-config"):
            continue
        (config,) = cm["data"].values()
        tls = tomllib.loads(config)["server"]["tls"]
        assert tls["mode"] == ("native" if mesh == "none" else "mesh"), cm["metadata"]["name"]
        if mesh == "none":
            assert tls["cert_file"] == "/etc/execbridge/tls/tls.crt"
            assert tls["ca_file"] == "/etc/execbridge/tls/ca.crt"


def test_the_services_accept_the_rendered_config_files(mesh: str, tmp_path: Path) -> None:
    """Each rendered config goes through the real binary's --check-config (the same
    loader and validation the pod runs, before any port binds)."""
    bin_dir = os.environ.get("EXECBRIDGE_BIN_DIR")
    if not bin_dir:
        pytest.skip("EXECBRIDGE_BIN_DIR not set (make chart-check sets it)")
    for cm in by_kind(docs(render(mesh, "executor.audit.sink=sqlite")), "ConfigMap"):
        if not cm["metadata"]["name"].endswith("-config"):
            continue
        ((file, config),) = cm["data"].items()
        service = file.removesuffix(".toml")
        path = tmp_path / file
        path.write_text(config)
        done = subprocess.run(
            [str(ROOT / bin_dir / f"execbridge-{service}"), "--config", str(path), "--check-config"],
            capture_output=True, text=True, check=False,
            # What the StatefulSet sets from the pod-index label.
            env={**os.environ, "EXECBRIDGE_EXECUTOR_SHARD__ID": "s0"},
        )
        assert done.returncode == 0, f"{mesh} {service}: {done.stderr}"


def test_linkerd_retries_only_read_routes_and_gives_every_declared_route_a_timeout() -> None:
    profiles = by_kind(docs(render("linkerd")), "ServiceProfile")
    assert len(profiles) == 2
    for profile in profiles:
        for route in profile["spec"]["routes"]:
            method = route["name"].split("/")[1]
            assert route["timeout"], route
            is_read = method.startswith(("Get", "List"))
            assert route["isRetryable"] is is_read, route["name"]
            assert method not in ("SubmitOrders", "SubscribeOrderUpdates", "StreamMarketData")
    pods = by_kind(docs(render("linkerd")), "Deployment")
    assert all(p["spec"]["template"]["metadata"]["annotations"]["linkerd.io/inject"] == "enabled" for p in pods)


def test_istio_never_retries_order_mutating_routes() -> None:
    objects = docs(render("istio"))
    (pa,) = by_kind(objects, "PeerAuthentication")
    assert pa["spec"]["mtls"]["mode"] == "STRICT"
    for vs in by_kind(objects, "VirtualService"):
        routes = {r["name"]: r for r in vs["spec"]["http"]}
        assert routes["mutating-and-default"]["retries"] == {"attempts": 0}
        assert "match" not in routes["mutating-and-default"], "the catch-all takes every unlisted call"
        assert routes["streams"]["retries"] == {"attempts": 0}
        retrying = [r for r in routes.values() if r["retries"]["attempts"] > 0]
        assert [r["name"] for r in retrying] in ([], ["reads"])
        for route in retrying:
            for match in route["match"]:
                assert not any(m in match["uri"]["regex"] for m in ("Submit", "Cancel", "Set", "Flatten"))
    rules = {d["metadata"]["name"]: d for d in by_kind(objects, "DestinationRule")}
    assert "outlierDetection" in rules["execbridge-gateway"]["spec"]["trafficPolicy"]
    pods = by_kind(objects, "Deployment") + by_kind(objects, "StatefulSet")
    assert all(p["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] == "true" for p in pods)


def test_the_chart_custom_resource_and_the_samples_match_the_generated_crd(mesh: str) -> None:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    resources = by_kind(docs(render(mesh)), "ExecbridgeConfig")
    resources += [d for f in sorted((ROOT / "k8s" / "samples").glob("*.yaml"))
                  for d in docs(f.read_text()) if d["kind"] == "ExecbridgeConfig"]
    assert len(resources) >= 2
    for r in resources:
        jsonschema.validate({"spec": r["spec"]}, schema)


def test_the_chart_ships_the_crd_it_was_generated_with() -> None:
    shipped = ROOT / "charts" / "execbridge" / "crds" / CRD.name
    assert shipped.read_text() == CRD.read_text(), "run `make crds`"


def test_egress_past_the_default_deny_is_only_the_api_server_and_venues() -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(docs(render("none")), "NetworkPolicy")}
    operator = policies["execbridge-operator-egress"]
    assert operator["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert {p["port"] for r in operator["egress"] for p in r["ports"]} == {443, 6443}
    venues = policies["execbridge-venue-egress"]
    assert venues["podSelector"]["matchExpressions"][0]["values"] == ["executor", "marketdata"]
    assert "execbridge-gateway" not in str(venues)


def test_the_chart_ships_the_current_alert_rules_and_dashboards() -> None:
    files = ROOT / "charts" / "execbridge" / "files"
    for source in [*(ROOT / "observability" / "rules").glob("*.yml"),
                   *(ROOT / "observability" / "dashboards").glob("*.json")]:
        shipped = files / source.parent.name / source.name
        assert shipped.read_text() == source.read_text(), "run `make chart-sync-observability`"
    objects = docs(render("none"))
    assert by_kind(objects, "PrometheusRule")
    dashboards = [c for c in by_kind(objects, "ConfigMap") if "dashboard" in c["metadata"]["name"]]
    assert len(dashboards) == len(list((ROOT / "observability" / "dashboards").glob("*.json")))
    assert all(c["metadata"]["labels"]["grafana_dashboard"] == "1" for c in dashboards)
