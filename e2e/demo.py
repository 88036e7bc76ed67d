"""Start the execbridge stack, run the demo orchestrator against it, stop the stack.

    .venv/bin/python e2e/demo.py

Exits 0 when the demo ran through, non-zero on any failure (the failing service's stderr
is printed). `make demo` builds the binaries and installs the client first.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from stack import REPO, Stack, StackError

EXAMPLE = REPO / "python-client" / "examples" / "demo_orchestrator.py"


def load_orchestrator() -> ModuleType:
    """The example module, loaded from its file (examples are not part of the package)."""
    spec = importlib.util.spec_from_file_location("demo_orchestrator", EXAMPLE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {EXAMPLE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the execbridge demo on a fresh local stack.")
    parser.add_argument("--bin-dir", type=Path, default=None, help="directory of the binaries")
    args = parser.parse_args(argv)

    orchestrator = load_orchestrator()
    print("starting marketdata, executor and gateway ...", flush=True)
    try:
        stack = Stack(bin_dir=args.bin_dir).start()
    except StackError as error:
        print(f"could not start the stack: {error}", file=sys.stderr)
        return 1
    failed = False
    try:
        print(stack.describe() + "\n", flush=True)
        asyncio.run(orchestrator.run(stack.gateway_target))
    except Exception as error:  # say which step failed, and show the services' side
        failed = True
        print(f"\ndemo failed: {type(error).__name__}: {error}", file=sys.stderr)
        for service in stack.services.values():
            if not service.running:
                print(f"\n{service.name} is not running; stderr:\n{service.stderr_tail()}", file=sys.stderr)
    finally:
        codes = stack.stop()
    unclean = {name: code for name, code in codes.items() if code != 0}
    if unclean:
        failed = True
        print(f"services did not exit cleanly on SIGTERM: {unclean}", file=sys.stderr)
    if failed:
        print(f"service logs: {stack.log_dir}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
