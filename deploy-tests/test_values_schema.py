"""values.schema.json (and the chart's cross-field rules) reject bad values at install time."""

from __future__ import annotations

import pytest

from conftest import helm_template

BAD_VALUES = [
    ("mesh=consul", "mesh"),
    ("gateway.replicas=-1", "replicas"),
    ("executor.shards=0", "shards"),
    ("gateway.ports.grpc=70000", "grpc"),
    ("gateway.autoscaling.targetCPUUtilizationPercentage=150", "targetCPUUtilizationPercentage"),
    ("executor.audit.sink=mongodb", "sink"),
    ("executor.persistence.size=lots", "size"),
    ("executor.audit.persistence.size=lots", "size"),
    ("executor.audit.flushIntervalMs=20000", "flushIntervalMs"),
    ("executor.history.idempotencyWindowSecs=10", "idempotencyWindowSecs"),
    ("executor.history.retainFinishedOrders=-1", "retainFinishedOrders"),
    ("executor.journal.snapshotEveryRecords=50", "snapshotEveryRecords"),
    ("image.pullPolicy=Sometimes", "pullPolicy"),
    ("image.digests.gateway=latest", "gateway"),
    ("gatewy.replicas=2", "gatewy"),
    ("istio.readRetries.attempts=9", "attempts"),
    ("operator.certificates.lifetimeHours=0", "lifetimeHours"),
    ("operator.venues[0].kind=ftx", "kind"),
    ("gateway.executorShard=2", "executorShard"),
    ("marketdata.autoscaling.maxReplicas=1", "maxReplicas"),
    ("operator.certificates.renewBeforeHours=800", "renewBeforeHours"),
]


@pytest.mark.parametrize(("setting", "names"), BAD_VALUES)
def test_bad_values_fail_before_anything_renders(setting: str, names: str) -> None:
    done = helm_template("--set", setting)
    assert done.returncode != 0, f"{setting} was accepted"
    assert names in done.stderr, done.stderr


def test_the_defaults_and_every_mesh_flavour_are_accepted() -> None:
    for mesh in ("none", "linkerd", "istio"):
        done = helm_template("--set", f"mesh={mesh}")
        assert done.returncode == 0, done.stderr
