"""The SDK over native mTLS to the real gateway: certificates made here with
``cryptography``; the client presents its certificate, verifies the gateway's, and the
failures (no client certificate, an untrusted gateway) raise the right exceptions."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from execbridge import NO_RETRY, ExecutionClient, OrderRequest, Side, TlsConfig, Unauthenticated, Unavailable
from helpers import EVENT_TIMEOUT
from stack import SERVICES, Stack

pytestmark = pytest.mark.asyncio


@dataclass
class Files:
    ca: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_pki(directory: Path, ca_name: str) -> tuple[Files, Files, Files]:
    """A CA, a certificate every service presents (server and client), the orchestrator's
    client certificate, and a client certificate of an identity the policy does not know."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name(ca_name)).issuer_name(_name(ca_name))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / f"{ca_name}.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def issue(stem: str, common_name: str, usages: list[x509.ObjectIdentifier]) -> Files:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{stem}.key").write_bytes(_pem_key(key))
        return Files(ca_file, directory / f"{stem}.pem", directory / f"{stem}.key")

    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    client = [ExtendedKeyUsageOID.CLIENT_AUTH]
    return (
        issue(f"{ca_name}-service", "execbridge-service", both),
        issue(f"{ca_name}-client", "orchestrator", client),
        issue(f"{ca_name}-stranger", "stranger", client),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Files, Files, Files]:
    return make_pki(tmp_path_factory.mktemp("pki"), "e2e-ca")


@pytest.fixture(scope="module")
def stack(pki: tuple[Files, Files, Files], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    service, _, _ = pki
    policy = tmp_path_factory.mktemp("policy") / "policy.toml"
    policy.write_text(
        'allow_anonymous = false\n\n[[principals]]\nname = "orchestrator"\n'
        'permissions = ["trade:paper", "orders:read", "marketdata:read"]\naccounts = ["*"]\n'
    )
    tls = {
        "server.tls.mode": "native",
        "server.tls.cert_file": str(service.cert),
        "server.tls.key_file": str(service.key),
        "server.tls.ca_file": str(service.ca),
    }
    config = {name: dict(tls) for name in SERVICES}
    config["gateway"]["policy.file"] = str(policy)
    with Stack(config=config) as running:
        yield running


async def test_an_mtls_client_trades_through_a_native_tls_gateway(stack: Stack, pki: tuple[Files, Files, Files], account: str) -> None:
    _, client_files, _ = pki
    tls = TlsConfig(ca_file=str(client_files.ca), cert_file=str(client_files.cert), key_file=str(client_files.key))
    async with ExecutionClient.connect(stack.gateway_target, tls=tls) as client:
        await client.wait_ready(timeout=EVENT_TIMEOUT)
        result = await client.submit_order(
            OrderRequest.market(account=account, symbol="BTC-USDT", side=Side.BUY, quantity="0.001"), timeout=EVENT_TIMEOUT
        )
    assert result.order.client_order_id


async def test_a_certificate_of_an_unknown_identity_is_unauthenticated(
    stack: Stack, pki: tuple[Files, Files, Files], account: str
) -> None:
    _, _, stranger = pki
    tls = TlsConfig(ca_file=str(stranger.ca), cert_file=str(stranger.cert), key_file=str(stranger.key))
    async with ExecutionClient.connect(stack.gateway_target, tls=tls, retry=NO_RETRY, timeout=3) as client:
        with pytest.raises(Unauthenticated) as caught:
            await client.positions(account)
    assert caught.value.reason == "UNKNOWN_PRINCIPAL"


async def test_without_a_client_certificate_the_call_is_unavailable(stack: Stack, pki: tuple[Files, Files, Files], account: str) -> None:
    _, client_files, _ = pki
    async with ExecutionClient.connect(stack.gateway_target, tls=TlsConfig(ca_file=str(client_files.ca)), retry=NO_RETRY, timeout=3) as client:
        with pytest.raises(Unavailable):
            await client.positions(account)


async def test_a_gateway_signed_by_an_unknown_ca_is_refused(stack: Stack, tmp_path: Path, pki: tuple[Files, Files, Files], account: str) -> None:
    _, client_files, _ = pki
    other, _, _ = make_pki(tmp_path, "other-ca")
    tls = TlsConfig(ca_file=str(other.ca), cert_file=str(client_files.cert), key_file=str(client_files.key))
    async with ExecutionClient.connect(stack.gateway_target, tls=tls, retry=NO_RETRY, timeout=3) as client:
        with pytest.raises(Unavailable):
            await client.positions(account)
