"""Shared helpers: run the real helm binary and load what it renders."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "execbridge"
MESHES = ("none", "linkerd", "istio")
HELM = os.environ.get("HELM", str(ROOT / ".tools" / "helm" / "helm"))
KUBE_VERSION = os.environ.get("KUBE_VERSION", "1.33.0")
RELEASE = os.environ.get("RENDER_RELEASE", "execbridge")
NAMESPACE = os.environ.get("RENDER_NAMESPACE", "execbridge")


def helm_template(*args: str) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart with the release name and namespace of k8s/rendered."""
    return subprocess.run(
        [HELM, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
         "--kube-version", KUBE_VERSION, *args],
        capture_output=True, text=True, check=False,
    )


def render(mesh: str = "none", *sets: str) -> str:
    argv = ["--set", f"mesh={mesh}"]
    for s in sets:
        argv += ["--set", s]
    done = helm_template(*argv)
    assert done.returncode == 0, done.stderr
    return done.stdout


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@pytest.fixture(scope="session", params=MESHES)
def mesh(request: pytest.FixtureRequest) -> str:
    return str(request.param)
