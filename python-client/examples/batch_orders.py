"""Submit a large batch of orders over one stream, resuming safely if the stream breaks.

    python examples/batch_orders.py --target 127.0.0.1:50051 --orders 20000

Orders come from an async generator (as a rebalancer would produce them); the client packs
those that are ready together into messages of up to ``--max-batch`` orders and keeps at
most ``--max-in-flight`` unanswered, so memory stays bounded however large the batch is.
If the stream fails midway, the orders without a result are resubmitted on a new stream
with the same ``client_order_id``: the gateway answers those it already has with the
original order (``duplicate=True``) instead of trading twice. Orders the gateway refused
for the principal's rate limit (``RateLimited``) go again after the delay it asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence

from execbridge import ExecbridgeError, ExecutionClient, OrderRequest, OrderResult, RateLimited, Side


async def generate(account: str, count: int) -> AsyncIterator[OrderRequest]:
    run = uuid.uuid4().hex[:8]
    for number in range(count):
        yield OrderRequest.market(
            account=account,
            symbol=("BTC-USDT", "ETH-USDT", "SOL-USDT")[number % 3],
            side=Side.BUY if number % 2 == 0 else Side.SELL,
            quantity="0.001",
            client_order_id=f"batch-{run}-{number}",
        )


async def submit_all(
    client: ExecutionClient, orders: Sequence[OrderRequest], *, max_batch: int, max_in_flight: int, attempts: int = 50
) -> dict[str, OrderResult]:
    """A result for every order: the unanswered ones are resubmitted after a stream failure,
    and the rate-limited ones after the delay the gateway asked for."""
    results: dict[str, OrderResult] = {}
    for attempt in range(1, attempts + 1):
        pending = [
            o for o in orders
            if o.client_order_id not in results or isinstance(results[o.client_order_id].error, RateLimited)
        ]
        if not pending:
            break
        wait = 0.0
        try:
            async for result in client.submit_orders(pending, max_batch=max_batch, max_in_flight=max_in_flight):
                results[result.client_order_id] = result
                if isinstance(result.error, RateLimited):
                    wait = max(wait, result.error.retry_after or 0.1)
        except ExecbridgeError as error:
            print(f"stream failed after {len(results)} results ({error}); resubmitting the rest", file=sys.stderr)
            wait = min(2.0, 0.1 * 2**attempt)
        await asyncio.sleep(wait)
    return results


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="127.0.0.1:50051")
    parser.add_argument("--account", default=f"batch-{uuid.uuid4().hex[:8]}")
    parser.add_argument("--orders", type=int, default=5_000)
    parser.add_argument("--max-batch", type=int, default=500)
    parser.add_argument("--max-in-flight", type=int, default=10_000)
    args = parser.parse_args(argv)

    orders = [o async for o in generate(args.account, args.orders)]
    async with ExecutionClient.connect(args.target) as client:
        await client.wait_ready(timeout=10)
        start = time.perf_counter()
        results = await submit_all(client, orders, max_batch=args.max_batch, max_in_flight=args.max_in_flight)
        elapsed = time.perf_counter() - start

    outcomes = Counter(
        "ok" if r.ok else f"{type(r.error).__name__}:{r.error.reason if r.error else ''}" for r in results.values()
    )
    duplicates = sum(1 for r in results.values() if r.duplicate)
    print(
        f"{len(results)}/{len(orders)} results in {elapsed:.2f}s ({len(results) / elapsed:,.0f} orders/s); "
        f"outcomes {dict(outcomes)}; duplicates {duplicates}"
    )
    return 0 if len(results) == len(orders) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
