"""`e2e/demo.py` (what `make demo` runs) goes through the whole tour and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parent / "demo.py"


def test_the_demo_runs_the_whole_tour_on_a_fresh_stack_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    out = result.stdout
    for heading in (
        "1. Order updates",
        "2. Market data",
        "3. Market buy",
        "4. Market sell",
        "5. Limit buy 3% below the bid (rests), then cancel it",
        "6. Limit buy 1% above the ask",
        "8. Orders (newest first)",
        "9. Trade history",
        "10. Positions and balances",
    ):
        assert heading in out, f"missing {heading!r} in:\n{out}"
    assert "=> CANCELED" in out
    assert out.count("=> FILLED") == 3, out
    assert out.rstrip().endswith("done."), out
