"""The SDK's examples run against the real services and exit cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from stack import Stack

EXAMPLES = Path(__file__).resolve().parents[1] / "python-client" / "examples"


def run(script: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_market_maker_quotes_trades_within_its_limits_and_leaves_nothing_open(stack: Stack) -> None:
    result = run("market_maker.py", "--target", stack.gateway_target, "--seconds", "4", "--max-inventory", "0.003")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert "open orders left 0" in summary, summary
    placed = int(summary.split("placed ")[1].split(" ")[0])
    assert placed >= 2, summary


def test_the_batch_example_gets_a_result_for_every_order(stack: Stack) -> None:
    result = run("batch_orders.py", "--target", stack.gateway_target, "--orders", "3000", "--max-batch", "250")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3000/3000 results" in result.stdout and "'ok': 3000" in result.stdout, result.stdout
