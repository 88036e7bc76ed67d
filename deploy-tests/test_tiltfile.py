"""The Tiltfile evaluated by a Starlark interpreter (starlark-pyo3) with stand-in Tilt
builtins that record each call (the Tilt binary is not available here), and the
Dockerfile the cluster flow builds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import starlark as sl

from conftest import ROOT, docs, render

TILTFILE = ROOT / "Tiltfile"
# `config` is a struct in Tilt; the stand-in builds one from recorded callables.
PRELUDE = (
    "config = struct(define_bool = _config_define_bool, "
    "define_string = _config_define_string, parse = _config_parse)\n"
)


class Tilt:
    """Records every builtin call as (name, args, kwargs)."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def recorder(self, name: str, result: Any = None) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            return result if result is not None else {"builtin": name, "args": list(args), **kwargs}
        call.__name__ = name
        return call

    def named(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(a, k) for n, a, k in self.calls if n == name]


def evaluate(args: dict[str, Any]) -> Tilt:
    tilt = Tilt(args)
    module = sl.Module()
    for name in ("local_resource", "probe", "http_get_action", "docker_build", "k8s_yaml",
                 "k8s_resource", "port_forward", "link", "sync", "run", "fall_back_on",
                 "_config_define_bool", "_config_define_string"):
        module.add_callable(name, tilt.recorder(name))
    module.add_callable("helm", tilt.recorder("helm", "<rendered yaml>"))
    module.add_callable("_config_parse", lambda: dict(args))

    def fail(message: str) -> None:
        raise ValueError(message)

    module.add_callable("fail", fail)

    def load(name: str) -> sl.FrozenModule:
        assert name == "ext://restart_process", name
        ext = sl.Module()
        ext.add_callable("docker_build_with_restart", tilt.recorder("docker_build_with_restart"))
        return ext.freeze()

    globals_ = sl.Globals.extended_by([sl.LibraryExtension.StructType, sl.LibraryExtension.Print])
    # Tilt's dialect: top-level `if`/`for` allowed, like Bazel's is not.
    dialect = sl.Dialect.extended()
    dialect.enable_top_level_stmt = True
    ast = sl.parse("Tiltfile", PRELUDE + TILTFILE.read_text(), dialect)
    sl.eval(module, ast, globals_, sl.FileLoader(load))
    return tilt


def test_the_local_flow_builds_once_and_runs_the_three_services_in_dependency_order() -> None:
    tilt = evaluate({})
    resources = {a[0]: k for a, k in tilt.named("local_resource")}
    assert list(resources) == ["build", "marketdata", "executor", "gateway"]
    assert resources["gateway"]["resource_deps"] == ["build", "executor"]
    assert tilt.named("docker_build_with_restart") == [] and tilt.named("helm") == []


@pytest.mark.parametrize("mesh", ["none", "linkerd", "istio"])
def test_the_cluster_flow_builds_dev_images_deploys_the_chart_and_forwards_the_gateway(mesh: str) -> None:
    tilt = evaluate({"cluster": True, "mesh": mesh})
    images = {a[0]: k for a, k in tilt.named("docker_build_with_restart")}
    assert set(images) == {f"ghcr.io/execbridge/execbridge-{c}" for c in
                           ("gateway", "executor", "marketdata", "operator")}
    for image, kwargs in images.items():
        assert kwargs["target"] == "dev"
        assert kwargs["live_update"], image
        assert "FROM ${DEV_BASE} AS dev" in (ROOT / kwargs["dockerfile"]).read_text()
    ((chart,), helm), = tilt.named("helm")
    assert (ROOT / chart / "Chart.yaml").exists()
    assert all((ROOT / v).exists() for v in helm["values"])
    assert helm["set"] == [f"mesh={mesh}"]
    # Every k8s_resource names a workload the chart renders with those values.
    rendered = docs(render(mesh, *[]))
    workloads = {o["metadata"]["name"] for o in rendered if o["kind"] in ("Deployment", "StatefulSet")}
    names = {a[0] for a, _ in tilt.named("k8s_resource")}
    assert names == workloads
    forwards = [a for a, _ in tilt.named("port_forward")]
    assert forwards == [(50051, 50051)]


def test_an_unknown_mesh_stops_the_tiltfile() -> None:
    with pytest.raises(Exception, match="--mesh must be"):
        evaluate({"cluster": True, "mesh": "consul"})


def test_the_dev_values_still_pass_the_chart_schema() -> None:
    from conftest import helm_template
    done = helm_template("-f", str(ROOT / "charts" / "execbridge" / "values-dev.yaml"))
    assert done.returncode == 0, done.stderr


def test_the_dockerfile_runs_release_images_as_nonroot_on_distroless() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "gcr.io/distroless/cc-debian12:nonroot" in text
    for target in ("gateway", "executor", "marketdata", "operator"):
        assert f"FROM runtime AS {target}" in text
    assert text.count("USER 65532:65532") >= 2
    assert Path(ROOT / ".dockerignore").read_text().startswith("#")


def test_checkov_passes_the_dockerfile(tmp_path: Path) -> None:
    import subprocess
    import sys
    (tmp_path / "Dockerfile").write_text((ROOT / "Dockerfile").read_text())
    done = subprocess.run(
        [str(Path(sys.executable).parent / "checkov"), "--skip-download", "--quiet", "--compact",
         "--framework", "dockerfile", "-d", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
