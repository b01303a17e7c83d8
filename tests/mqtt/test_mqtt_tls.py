"""mqtts:// against a private Mosquitto with a TLS listener and a throwaway CA."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.mosquitto import MosquittoServer, mosquitto_binary
from support.waiting import wait_until

Message = dict[str, Any]


def _write_ca_and_server_cert(directory: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1, made with ``cryptography``."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    server_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate("switchboard test CA", ca_key, "switchboard test CA", ca_key, True)
    server_cert = certificate("127.0.0.1", server_key, "switchboard test CA", ca_key, False)
    paths = {"ca": directory / "ca.pem", "cert": directory / "server.pem", "key": directory / "server.key"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[MosquittoServer, Path]]:
    if mosquitto_binary() is None:
        pytest.skip("the mosquitto binary is not installed")
    paths = _write_ca_and_server_cert(tmp_path)
    listener = f"cafile {paths['ca']}\ncertfile {paths['cert']}\nkeyfile {paths['key']}\n"
    broker = MosquittoServer(tmp_path, listener, scheme="mqtts")
    broker.start()
    try:
        yield broker, paths["ca"]
    finally:
        broker.kill()


async def echo_app(scope: Message, receive: Any, send: Any) -> None:
    while True:
        event = await receive()
        await send({"type": "mqtt.publish", "topic": event["topic"] + "/echo", "payload": event["payload"]})


async def test_mqtts_with_a_private_ca(serve: Any, tls_broker: Any, prefix: str) -> None:
    broker, ca_file = tls_broker
    stack = await serve(echo_app, brokers=[broker.url], ca_file=str(ca_file), subscriptions=[f"{prefix}/in"])
    assert stack.plugin.connected
    # The gateway's own session carries the round trip: it hears its echo on the same broker.
    stack.plugin.deliver({"type": "mqtt.subscribe", "topic": f"{prefix}/in/echo"})
    stack.plugin.deliver({"type": "mqtt.publish", "topic": f"{prefix}/in", "payload": b"over tls", "qos": 1})
    await wait_until(lambda: stack.plugin.stats()["messages_in"] >= 2, what="the message and its echo")


async def test_mqtts_refuses_an_unknown_ca(serve: Any, tls_broker: Any, prefix: str) -> None:
    broker, _ = tls_broker
    stack = await serve(None, brokers=[broker.url], connect_timeout=0.5)
    await wait_until(lambda: stack.plugin.stats()["connect_failures"] >= 1, what="a failed TLS handshake")
    assert not stack.plugin.connected


async def test_mqtts_insecure_skips_verification(serve: Any, tls_broker: Any) -> None:
    broker, _ = tls_broker
    stack = await serve(None, brokers=[broker.url], tls_insecure=True)
    assert stack.plugin.connected
