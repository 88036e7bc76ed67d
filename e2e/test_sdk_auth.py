"""Authentication and authorization through the SDK against a gateway with a policy file:
API keys, HS256 JWTs, the admin permission, per-principal rate limits; failures raise the
right exceptions and a planted key never shows in logs or errors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from execbridge import (
    NO_RETRY,
    ExecutionClient,
    OrderRequest,
    PermissionDenied,
    RateLimited,
    RetryPolicy,
    RiskLimits,
    Side,
    TradingMode,
    TradingState,
    Unauthenticated,
)
from helpers import EVENT_TIMEOUT
from stack import Stack

pytestmark = pytest.mark.asyncio

ADMIN_KEY = "admin-" + uuid.uuid4().hex
TRADER_KEY = "trader-" + uuid.uuid4().hex
SLOW_KEY = "slow-" + uuid.uuid4().hex
CANARY = "canary-" + uuid.uuid4().hex
JWT_SECRET = uuid.uuid4().bytes + uuid.uuid4().bytes
ISSUER, AUDIENCE = "https://auth.e2e", "execbridge"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def jwt(sub: str, *, expires_in: int = 300, secret: bytes = JWT_SECRET) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    claims = b64(json.dumps({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + expires_in}).encode())
    signature = hmac.new(secret, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64(signature)}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory: Path = tmp_path_factory.mktemp("policy")
    (directory / "jwt.key").write_bytes(JWT_SECRET)
    policy = directory / "policy.toml"
    policy.write_text(
        f"""
allow_anonymous = false

[[principals]]
name = "ops"
permissions = ["admin", "trade:paper", "orders:read", "marketdata:read"]
accounts = ["*"]

[[principals]]
name = "trader"
permissions = ["trade:paper", "orders:read"]
accounts = ["*"]

[[principals]]
name = "slow"
permissions = ["trade:paper", "orders:read"]
accounts = ["*"]
[principals.limits]
submit = {{ per_second = 1, burst = 1 }}
cancel = {{ per_second = 10, burst = 10 }}
read = {{ per_second = 1, burst = 1 }}
stream = {{ per_second = 10, burst = 10 }}

[[api_keys]]
principal = "ops"
sha256 = "{sha(ADMIN_KEY)}"

[[api_keys]]
principal = "trader"
sha256 = "{sha(TRADER_KEY)}"

[[api_keys]]
principal = "slow"
sha256 = "{sha(SLOW_KEY)}"

[jwt]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"

[[jwt.keys]]
kid = "k1"
algorithm = "HS256"
key_file = "{directory / 'jwt.key'}"
"""
    )
    with Stack(config={"gateway": {"policy.file": str(policy)}}) as running:
        yield running


def market(account: str) -> OrderRequest:
    return OrderRequest.market(account=account, symbol="BTC-USDT", side=Side.BUY, quantity="0.001")


async def test_an_api_key_and_a_jwt_identify_their_principals(stack: Stack, account: str) -> None:
    async with ExecutionClient.connect(stack.gateway_target, api_key=TRADER_KEY) as client:
        await client.submit_order(market(account), timeout=EVENT_TIMEOUT)
    async with ExecutionClient.connect(stack.gateway_target, token_provider=lambda: jwt("trader")) as client:
        await client.submit_order(market(account), timeout=EVENT_TIMEOUT)
        assert len([o async for o in client.iter_orders(account)]) == 2


async def test_missing_unknown_and_forged_credentials_are_unauthenticated(stack: Stack, account: str) -> None:
    cases = [
        ({}, "MISSING_CREDENTIALS"),
        ({"api_key": "not-a-key-" + uuid.uuid4().hex}, "UNKNOWN_API_KEY"),
        ({"bearer_token": jwt("trader", secret=b"forged" * 6)}, "INVALID_TOKEN"),
        ({"bearer_token": jwt("trader", expires_in=-3600)}, None),
    ]
    for credentials, reason in cases:
        async with ExecutionClient.connect(stack.gateway_target, retry=NO_RETRY, **credentials) as client:  # type: ignore[arg-type]
            with pytest.raises(Unauthenticated) as caught:
                await client.positions(account)
        if reason is not None:
            assert caught.value.reason == reason, caught.value


async def test_admin_rpcs_work_for_an_admin_and_are_denied_to_a_trader(stack: Stack, account: str) -> None:
    async with ExecutionClient.connect(stack.gateway_target, api_key=ADMIN_KEY) as ops:
        risk = await ops.admin.set_trading_state(account, TradingState.HALTED, reason="e2e kill switch")
        assert risk.state is TradingState.HALTED
        halted = await ops.submit_order(market(account))
        assert halted.order.status.name == "REJECTED"
        await ops.admin.set_trading_state(account, TradingState.ACTIVE, reason="e2e resume")
        limits = RiskLimits(max_open_orders=7)
        risk = await ops.admin.set_risk_limits(account, limits, mode=TradingMode.PAPER, reason="e2e limits")
        assert risk.paper_limits.max_open_orders == 7
        assert (await ops.admin.get_risk_limits(account)).paper_limits.max_open_orders == 7
        assert await ops.admin.cancel_all_orders(account, reason="e2e") == []
    async with ExecutionClient.connect(stack.gateway_target, api_key=TRADER_KEY) as trader:
        with pytest.raises(PermissionDenied):
            await trader.admin.get_risk_limits(account)


async def test_a_rate_limited_principal_gets_rate_limited_with_retry_after(stack: Stack, account: str) -> None:
    async with ExecutionClient.connect(stack.gateway_target, api_key=SLOW_KEY, retry=NO_RETRY) as client:
        await client.positions(account)
        with pytest.raises(RateLimited) as caught:
            await client.positions(account)
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 1.5
    # With retries, the client waits the server's delay and gets through.
    async with ExecutionClient.connect(stack.gateway_target, api_key=SLOW_KEY, retry=RetryPolicy(initial_backoff=0.05)) as client:
        await client.positions(account)
        await client.positions(account)


async def test_a_planted_key_never_appears_in_logs_or_exception_text(
    stack: Stack, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.01, retry_on=(Unauthenticated,))
    async with ExecutionClient.connect(stack.gateway_target, api_key=CANARY, retry=policy) as client:
        with pytest.raises(Unauthenticated) as caught:
            await client.submit_order(market(account))
        error = caught.value
        text = "".join(traceback.format_exception(error)) + repr(error) + str(error.metadata) + repr(client.options)
    assert CANARY not in text
    assert CANARY not in caplog.text
    for name in ("gateway", "executor", "marketdata"):
        assert CANARY not in stack[name].logs(), f"{name} logged the key"
