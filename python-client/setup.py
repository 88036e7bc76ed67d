"""Build hook: generate the protobuf/gRPC modules from the repository's proto/ at build time.

The contract lives only in ``proto/`` at the repository root. Every build (wheel, editable
install, sdist) regenerates ``src/execbridge/_proto/`` from it with grpcio-tools:

- ``--python_out`` / ``--pyi_out``: messages and their type stubs;
- ``--grpc_python_out``: the service stubs;
- ``--mypy_grpc_out`` (mypy-protobuf): type stubs for the service stubs, including the
  ``grpc.aio`` flavour the client uses.

protoc writes modules that import each other by their proto package (``from execbridge.v1
import orders_pb2``). They are installed one level down, under ``execbridge._proto``, so a
small rewrite step points those imports (and the module names the messages register under)
at ``execbridge._proto.v1``. Nothing here is hand-written protobuf.

The proto directory is ``../proto`` relative to this file, or ``$EXECBRIDGE_PROTO_DIR``.
An sdist carries the generated modules, so building a wheel from an sdist needs no proto/.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
PROTO_OUT = HERE / "src" / "execbridge" / "_proto"
# The proto package root every .proto file lives under; it maps to execbridge._proto.
PROTO_ROOT_PACKAGE = "execbridge"
TARGET_PACKAGE = "execbridge._proto"
MYPY_DIRECTIVE = "# mypy: ignore-errors\n"
GENERATED_MARKER = "# Generated from proto/ at build time by python-client/setup.py. Do not edit.\n"


def _proto_dir() -> Path | None:
    configured = os.environ.get("EXECBRIDGE_PROTO_DIR")
    if configured:
        path = Path(configured).resolve()
        if not path.is_dir():
            raise SystemExit(f"EXECBRIDGE_PROTO_DIR={configured!r} is not a directory")
        return path
    default = (HERE.parent / "proto").resolve()
    return default if default.is_dir() else None


def _mypy_grpc_plugin(workdir: Path) -> Path:
    """A protoc plugin executable running mypy-protobuf's gRPC generator in this interpreter.

    A wrapper script rather than the ``protoc-gen-mypy_grpc`` console script: the build may
    run in an isolated environment whose scripts directory is not on PATH.
    """
    plugin = workdir / "protoc-gen-mypy_grpc"
    plugin.write_text(
        f"#!/bin/sh\nexec '{sys.executable}' -c "
        "'import sys; from mypy_protobuf.main import grpc; sys.exit(grpc())'\n"
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return plugin


# `from execbridge.v1 import x_pb2` and `import execbridge.v1.x_pb2` at the start of a line.
_IMPORT_RE = re.compile(
    rf"^(?P<indent>\s*)(?P<kw>from|import) {PROTO_ROOT_PACKAGE}\.(?P<rest>[\w.]+)",
    re.MULTILINE,
)
# The module name the messages register under (used by pickle and in reprs).
_MODULE_NAME_RE = re.compile(rf"BuildTopDescriptorsAndMessages\(DESCRIPTOR, '{PROTO_ROOT_PACKAGE}\.")


def _rewrite_imports(source: str) -> str:
    source = _IMPORT_RE.sub(rf"\g<indent>\g<kw> {TARGET_PACKAGE}.\g<rest>", source)
    return _MODULE_NAME_RE.sub(f"BuildTopDescriptorsAndMessages(DESCRIPTOR, '{TARGET_PACKAGE}.", source)


def generate(proto_dir: Path, out: Path = PROTO_OUT) -> None:
    """Regenerate ``out`` from every .proto file under ``proto_dir``."""
    from grpc_tools import protoc  # a build requirement; imported late so setup.py parses without it

    protos = sorted(p.relative_to(proto_dir).as_posix() for p in proto_dir.rglob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {proto_dir}")
    stray = [p for p in protos if not p.startswith(f"{PROTO_ROOT_PACKAGE}/")]
    if stray:
        raise SystemExit(f"proto files outside {PROTO_ROOT_PACKAGE}/ cannot be mapped: {stray}")
    well_known = Path(protoc.__file__).resolve().parent / "_proto"

    with tempfile.TemporaryDirectory(prefix="execbridge-protoc-") as tmp:
        tmpdir = Path(tmp)
        gen = tmpdir / "gen"
        gen.mkdir()
        plugin = _mypy_grpc_plugin(tmpdir)
        args = [
            "grpc_tools.protoc",
            f"--proto_path={proto_dir}",
            f"--proto_path={well_known}",
            f"--python_out={gen}",
            f"--pyi_out={gen}",
            f"--grpc_python_out={gen}",
            f"--plugin=protoc-gen-mypy_grpc={plugin}",
            f"--mypy_grpc_out={gen}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed; see the messages above")

        staged = tmpdir / "staged"
        shutil.copytree(gen / PROTO_ROOT_PACKAGE, staged)
        for path in staged.rglob("*"):
            if path.suffix in (".py", ".pyi"):
                # The inline mypy directive keeps `mypy --strict` quiet about generated code
                # wherever it runs from, not only where pyproject.toml's overrides apply.
                path.write_text(MYPY_DIRECTIVE + _rewrite_imports(path.read_text()))
        # protoc writes no __init__.py; every generated directory becomes a package.
        for directory in [staged, *(d for d in staged.rglob("*") if d.is_dir())]:
            (directory / "__init__.py").write_text(GENERATED_MARKER)

        # Replace the previous output whole, so a deleted .proto leaves no stale module.
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, out)


def _ensure_generated() -> None:
    proto_dir = _proto_dir()
    if proto_dir is not None:
        generate(proto_dir)
    elif not (PROTO_OUT / "__init__.py").is_file():
        raise SystemExit(
            "cannot find the execbridge proto/ directory: build from a checkout of the "
            "repository (python-client/../proto) or set EXECBRIDGE_PROTO_DIR"
        )
    # else: building from an sdist, which carries the generated modules.


class BuildPyWithProtos(build_py):
    """build_py that first generates execbridge._proto and adds its packages to the build."""

    def run(self) -> None:
        _ensure_generated()
        # Package discovery ran before the generated packages existed (fresh clone).
        generated = find_packages(where=str(HERE / "src"), include=[f"{TARGET_PACKAGE}*"])
        self.packages = sorted(set(self.packages or []) | set(generated))
        self.distribution.packages = self.packages
        self.__dict__.pop("data_files", None)  # recomputed lazily from the new package list
        super().run()


class SdistWithProtos(sdist):
    """sdist that carries the generated modules (see MANIFEST.in)."""

    def run(self) -> None:
        _ensure_generated()
        super().run()


setup(cmdclass={"build_py": BuildPyWithProtos, "sdist": SdistWithProtos})
