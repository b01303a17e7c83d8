"""Fixtures for the SMTP plugin tests: in-process stacks, smtplib clients, TLS, OS processes.

In-process tests run the real plugin, gateway core and worker over the in-memory layer and
talk to them with the standard library's ``smtplib`` (in a thread) or a raw socket on
loopback. End-to-end tests start ``switchboard gateway`` + ``switchboard worker`` over the
real Redis (or ``switchboard run``) as OS processes with ``smtp_settings.py``.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import secrets
import smtplib
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from support.django_settings import configure as configure_django
from support.processes import ModeDeployment, free_tcp_port, process_env, redis_reachable
from support.processes import pytest_runtest_makereport as pytest_runtest_makereport
from support.waiting import deadline

configure_django()

from support.layers import installed_layer
from support.stacks import PluginStack, stacks_stopped_after

from switchboard.consumers.email import EmailConsumer, ReceivedEmail
from switchboard.gateway.config import parse_options
from switchboard.gateway.layers import ChannelLayer
from switchboard.gateway.specs import GATEWAY_TO_WORKER, validate_message, validate_scope
from switchboard.protocols.smtp import SmtpOptions, SmtpPlugin

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "chatsite"
HERE = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WAIT = deadline(10)  # safety net (scaled): a broken path fails the test instead of hanging it


# -- what consumers saw ---------------------------------------------------------------


@dataclass
class Received:
    """One ``email.received`` as a consumer saw it, with stored files already read."""

    message: dict[str, Any]
    scope: dict[str, Any]
    email: ReceivedEmail
    contents: dict[str | None, bytes]  # attachment filename -> bytes (read in the handler)
    raw: bytes
    spec_error: str | None


class CollectingConsumer(EmailConsumer):
    """Puts every message it handles on ``sink``, reading stored files while they exist."""

    sink: ClassVar[asyncio.Queue[Received] | None] = None

    async def email_received(self, message: dict[str, Any]) -> None:
        spec_error = None
        try:
            validate_message(message, direction=GATEWAY_TO_WORKER)
            validate_scope(self.scope)
        except ValueError as exc:
            spec_error = str(exc)
        email = ReceivedEmail.from_message(message)
        contents = {a.filename: await asyncio.to_thread(a.read) for a in email.attachments}
        raw = await asyncio.to_thread(email.raw)
        assert self.sink is not None
        self.sink.put_nowait(Received(message, dict(self.scope), email, contents, raw, spec_error))


# -- an SMTP client -------------------------------------------------------------------


def smtp_client(address: tuple[str, int], timeout: float = WAIT) -> smtplib.SMTP:
    return smtplib.SMTP(address[0], address[1], local_hostname="client.test", timeout=timeout)


def send(address: tuple[str, int], message: Any, from_addr: str = "alice@example.org",
         to_addrs: list[str] | None = None) -> dict[str, Any]:
    """Send one message with smtplib (blocking: call through ``asyncio.to_thread``)."""
    with smtp_client(address) as client:
        if isinstance(message, bytes):
            return client.sendmail(from_addr, to_addrs or ["bob@example.com"], message)
        return client.send_message(message, from_addr=from_addr, to_addrs=to_addrs)


class RawClient:
    """A plain socket speaking SMTP by hand: for input smtplib refuses to produce."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=WAIT)
        self.file = self.sock.makefile("rb")
        self.banner = self.reply()

    def reply(self) -> tuple[int, str]:
        """Read one (possibly multi-line) reply: its code and its text."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            if line[3:4] != b"-":
                return int(line[:3]), "\n".join(lines)

    def command(self, line: bytes) -> tuple[int, str]:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


# -- TLS ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for localhost / 127.0.0.1 and its key (PEM files)."""
    pytest.importorskip("cryptography", reason="the TLS tests generate their certificate with cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_file = directory / "cert.pem"
    key_file = directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_file), str(key_file)


def client_tls_context(cert_file: str) -> ssl.SSLContext:
    """A client context trusting exactly the test certificate (verification stays on)."""
    return ssl.create_default_context(cafile=cert_file)


# -- the in-process stack -------------------------------------------------------------


@pytest.fixture
async def layer() -> AsyncIterator[ChannelLayer]:
    """A fresh in-memory layer installed as the process layer."""
    async with installed_layer() as channel_layer:
        yield channel_layer


def smtp_options(**raw: Any) -> SmtpOptions:
    """Options as the config would give them (so they pass the real validation)."""
    raw.setdefault("bind", "127.0.0.1:0")
    raw.setdefault("hostname", "mx.test")
    raw.setdefault("domains", ["example.com"])
    options: SmtpOptions = parse_options(SmtpOptions, raw, where="PROTOCOLS.smtp")
    return options


@dataclass(kw_only=True)
class Stack(PluginStack):
    """The SMTP plugin + gateway core (+ a worker running the collecting consumer) on one layer."""

    received: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)

    @property
    def plugin(self) -> SmtpPlugin:
        return self.plugin_of(SmtpPlugin)

    @property
    def address(self) -> tuple[str, int]:
        assert self.plugin.address is not None
        return self.plugin.address

    async def send(self, message: Any, **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(send, self.address, message, **kwargs)

    async def next(self, timeout: float = WAIT) -> Received:
        return await asyncio.wait_for(self.received.get(), timeout)


@pytest.fixture
async def stack(layer: ChannelLayer, tmp_path: Path) -> AsyncIterator[Any]:
    """``await stack(worker=True, **options)`` starts a :class:`Stack`; stopped after the test.

    ``storage_path`` defaults to a fresh temporary directory.
    """
    async with stacks_stopped_after() as stacks:

        async def start(worker: bool = True, consumer: Any = None, **options: Any) -> Stack:
            options.setdefault("storage_path", str(tmp_path / "storage"))
            received: asyncio.Queue[Received] = asyncio.Queue()
            app = None
            if worker:
                consumer_class = consumer or CollectingConsumer
                app = consumer_class.as_asgi(sink=received) if hasattr(consumer_class, "sink") else consumer_class.as_asgi()
            plugin = SmtpPlugin(smtp_options(**options))
            running = await Stack.start(layer, [plugin], app=app, protocols=["email"], received=received)
            stacks.append(running)
            return running

        yield start


# -- OS processes ---------------------------------------------------------------------


@dataclass
class Deployment(ModeDeployment):
    """Gateway and worker processes (or one ``run`` process) serving SMTP on ``port``."""

    settings_module = "smtp_settings"
    cwd = HERE

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def out_dir(self) -> Path:
        return Path(self.env["SMTP_TEST_OUT_DIR"])

    @property
    def storage_dir(self) -> Path:
        return Path(self.env["SMTP_TEST_STORAGE"])

    def wait_listening(self, timeout: float = 30) -> None:
        """Wait until the gateway answers with an SMTP banner."""

        def greets() -> bool:
            try:
                with socket.create_connection(self.address, timeout=deadline(2)) as sock:
                    return sock.recv(64).startswith(b"220 ")
            except OSError:
                return False

        self.wait_until_sync(greets, timeout, "an SMTP banner from the gateway")

    def wait_for_output(self, count: int, timeout: float = 30) -> list[Path]:
        """Wait until the worker's consumer has written ``count`` result files."""
        self.wait_until_sync(lambda: len(list(self.out_dir.glob("*.json"))) >= count, timeout, f"{count} result file(s)")
        return sorted(self.out_dir.glob("*.json"))


@pytest.fixture
def deploy(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """``deploy("split" | "run")`` starts the processes; they are stopped after the test."""
    deployments: list[Deployment] = []

    def start(mode: str, http_port: int | None = None) -> Deployment:
        if mode == "split" and not redis_reachable():
            pytest.skip("Redis is not reachable on 127.0.0.1:6379 (start it: see .ci/run)")
        port = free_tcp_port()
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        env = process_env(
            [HERE, EXAMPLE, ROOT],
            SMTP_TEST_BIND=f"127.0.0.1:{port}",
            SMTP_TEST_OUT_DIR=str(out_dir),
            SMTP_TEST_STORAGE=str(tmp_path / "storage"),
            # 15 s by default; the MIME bomb test (six 100,000-part mails at once) took
            # longer than that to reach the part limit on a loaded 2-core machine.
            SMTP_TEST_PARSE_TIMEOUT=str(deadline(60)),
        )
        env.pop("SMTP_TEST_HTTP_BIND", None)
        if http_port is not None:
            env["SMTP_TEST_HTTP_BIND"] = f"127.0.0.1:{http_port}"
        env.pop("SMTP_TEST_REDIS_URL", None)
        if mode == "split":
            env["SMTP_TEST_REDIS_URL"] = REDIS_URL
            env["SMTP_TEST_REDIS_PREFIX"] = f"sb-smtp-{secrets.token_hex(4)}:"
        deployment = Deployment(mode, port, env, tmp_path)
        deployments.append(deployment)
        deployment.start_mode()
        deployment.wait_listening()
        return deployment

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for deployment in deployments:
        deployment.stop_all()
        if failed:
            print(deployment.logs())

