"""Benchmark of the Python client against the real services.

    python python-client/benchmarks/bench_client.py --bin-dir target/release
    python python-client/benchmarks/bench_client.py --target 127.0.0.1:50051   # a running stack

1. Unary ``submit_order`` at a fixed rate (open loop: sends are scheduled by the clock, not
   by the previous answer, so a slow answer cannot hide the queueing it causes): p50, p99,
   p99.9 and max of the submit -> answer latency. Targets on loopback: p50 <= 400 us,
   p99 <= 1.5 ms.
2. Batched ``submit_orders`` throughput: orders/s over one stream and over several streams
   on a pool of channels. Target: >= 100,000 orders/s.

With ``--bin-dir`` it starts its own stack (``e2e/stack.py``) with a policy whose rate
limits do not get in the way; against ``--target`` the gateway's own policy applies (the
embedded one allows 1,000 submits/s per principal, which then caps the batch result).
Results are printed and written as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from execbridge import ExecutionClient, NO_RETRY, OrderRequest, Side

REPO = Path(__file__).resolve().parents[2]

POLICY = """
allow_anonymous = true
max_concurrent_calls = 65536
max_concurrent_streams = 4096

[anonymous]
name = "anonymous"
permissions = ["trade:paper", "orders:read", "marketdata:read"]
accounts = ["*"]

[anonymous.limits]
submit = { per_second = 100000000, burst = 100000000 }
cancel = { per_second = 100000000, burst = 100000000 }
read = { per_second = 100000000, burst = 100000000 }
stream = { per_second = 100000, burst = 100000 }
"""


def order(account: str, number: int) -> OrderRequest:
    # A far limit buy rests on the paper book: the benchmark measures the bridge, not fills.
    return OrderRequest.limit(
        account=account, symbol="BTC-USDT", side=Side.BUY, quantity="0.001", price="1000",
        client_order_id=f"bench-{account[-6:]}-{number}",
    )


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def unary(target: str, rate: float, seconds: float, warmup: int) -> dict[str, float]:
    account = f"bu-{uuid.uuid4().hex[:8]}"
    async with ExecutionClient.connect(target, retry=NO_RETRY, tracing=False) as client:
        await client.wait_ready(timeout=10)
        for number in range(warmup):
            await client.submit_order(order(account, -number - 1))
        latencies: list[float] = []
        errors = 0
        loop = asyncio.get_running_loop()
        interval = 1.0 / rate
        count = int(rate * seconds)
        start = loop.time()

        async def one(number: int) -> None:
            nonlocal errors
            request = order(account, number)
            sent = time.perf_counter()
            try:
                await client.submit_order(request, timeout=5)
            except Exception:
                errors += 1
                return
            latencies.append(time.perf_counter() - sent)

        tasks = []
        for number in range(count):
            delay = start + number * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(number)))
        await asyncio.gather(*tasks)
    us = [x * 1e6 for x in latencies]
    return {
        "rate_per_s": rate,
        "count": len(us),
        "errors": errors,
        "p50_us": percentile(us, 0.50),
        "p99_us": percentile(us, 0.99),
        "p999_us": percentile(us, 0.999),
        "max_us": max(us),
        "mean_us": statistics.fmean(us),
    }


async def batched(target: str, total: int, streams: int, max_batch: int) -> dict[str, float]:
    per_stream = total // streams
    async with ExecutionClient.connect(target, retry=NO_RETRY, tracing=False, pool_size=streams) as client:
        await client.wait_ready(timeout=10)

        async def run(index: int) -> tuple[int, int]:
            account = f"bb{index}-{uuid.uuid4().hex[:8]}"
            orders = [order(account, n) for n in range(per_stream)]
            ok = failed = 0
            async for result in client.submit_orders(orders, max_batch=max_batch, max_in_flight=max_batch * 8):
                if result.ok:
                    ok += 1
                else:
                    failed += 1
            return ok, failed

        start = time.perf_counter()
        outcomes = await asyncio.gather(*(run(i) for i in range(streams)))
        elapsed = time.perf_counter() - start
    ok = sum(o for o, _ in outcomes)
    failed = sum(f for _, f in outcomes)
    return {
        "streams": streams,
        "max_batch": max_batch,
        "orders": ok + failed,
        "failed": failed,
        "seconds": elapsed,
        "orders_per_s": (ok + failed) / elapsed,
    }


@contextlib.contextmanager
def own_stack(bin_dir: Path) -> Iterator[str]:
    sys.path.insert(0, str(REPO / "e2e"))
    from stack import Stack  # the e2e harness: the real binaries on free loopback ports

    directory = Path(tempfile.mkdtemp(prefix="execbridge-bench-"))
    (directory / "policy.toml").write_text(POLICY)
    config = {"gateway": {"policy.file": str(directory / "policy.toml")}}
    with Stack(bin_dir=bin_dir, config=config, log_level="warn") as stack:
        yield stack.gateway_target


async def bench(target: str, args: argparse.Namespace) -> dict[str, object]:
    results: dict[str, object] = {"unary": await unary(target, args.rate, args.seconds, args.warmup)}
    results["batched"] = [
        await batched(target, args.batch_orders, streams, args.max_batch) for streams in args.streams
    ]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--bin-dir", type=Path, help="start a stack of these binaries")
    where.add_argument("--target", help="a running gateway")
    parser.add_argument("--rate", type=float, default=1000.0, help="unary submits per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--batch-orders", type=int, default=200_000)
    parser.add_argument("--max-batch", type=int, default=1000)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "python-client.json")
    args = parser.parse_args(argv)

    if args.target:
        results = asyncio.run(bench(args.target, args))
    else:
        with own_stack(args.bin_dir) as target:
            results = asyncio.run(bench(target, args))
    u = results["unary"]
    assert isinstance(u, dict)
    print(
        f"unary submit_order @ {u['rate_per_s']:.0f}/s x {u['count']}: p50 {u['p50_us']:.0f} us, "
        f"p99 {u['p99_us']:.0f} us, p99.9 {u['p999_us']:.0f} us, max {u['max_us']:.0f} us, errors {u['errors']}"
    )
    for b in results["batched"]:  # type: ignore[attr-defined]
        print(
            f"batched submit_orders, {b['streams']} stream(s), {b['max_batch']}/message: "
            f"{b['orders']:,} orders in {b['seconds']:.2f}s = {b['orders_per_s']:,.0f} orders/s (failed {b['failed']})"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
