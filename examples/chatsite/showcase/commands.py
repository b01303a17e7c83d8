"""The front page's copy-paste commands: one per protocol that is not a browser's.

Built from the same settings the gateway reads (``SWITCHBOARD["PROTOCOLS"]``), so the
addresses on the page are the ones it listens on when it was configured through the
example's environment variables (README, *The example's settings*). Each command uses a
tool most machines have (python3, curl) or the broker's own client (mosquitto_pub).
"""

from __future__ import annotations

import secrets
import shlex
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from switchboard.gateway.config import parse_bind

#: The example's Twilio auth token when none is configured (chatsite/settings.py): with
#: it, the page may sign a webhook for you; with a real token it must not.
PLACEHOLDER_TOKEN = "example-not-a-real-token"


@dataclass(frozen=True)
class Command:
    """One way in: what it is, the command line (None: not enabled), and a note."""

    protocol: str
    title: str
    command: str | None
    note: str


def _protocols() -> dict[str, Any]:
    return dict(getattr(settings, "SWITCHBOARD", {}).get("PROTOCOLS", {}))


def _reachable(bind: str) -> tuple[str, int]:
    """Where a client on this machine reaches ``bind`` (a wildcard host is reached on loopback)."""
    host, port = parse_bind(bind, where="bind")
    return ("127.0.0.1" if host in ("0.0.0.0", "", "::") else host), port


def udp_command(room: str = "lobby") -> Command:
    options = _protocols().get("udp")
    if not options:
        return Command("udp", "UDP echo", None, "The udp plugin is not enabled.")
    binds = options["bind"] if isinstance(options["bind"], list) else [options["bind"]]
    host, port = _reachable(binds[0])
    code = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); "
        f's.sendto(b"hello switchboard", ("{host}", {port})); print(s.recv(2048).decode())'
    )
    return Command(
        "udp", "UDP echo", f"python3 -c {shlex.quote(code)}",
        f"Every datagram comes back in capitals (or: nc -u {host} {port}, then type).",
    )


def smtp_command(room: str = "lobby") -> Command:
    options = _protocols().get("smtp")
    if not options:
        return Command("email", "E-mail to a chat room", None, "The smtp plugin is not enabled.")
    host, port = _reachable(options.get("bind", "127.0.0.1:2525"))
    domain = (options.get("domains") or ["chat.example.com"])[0].lstrip("*.")
    message = f"From: you@example.org\\nSubject: Hello {room}\\n\\nSent with curl.\\n"
    command = (
        f"printf {shlex.quote(message)} | curl -s smtp://{host}:{port} "
        f"--mail-from you@example.org --mail-rcpt {room}@{domain} -T -"
    )
    return Command("email", "E-mail to a chat room", command, f"Mail to <room>@{domain} is posted in that room.")


def mqtt_command(room: str = "kitchen") -> Command:
    options = _protocols().get("mqtt")
    if not options:
        return Command(
            "mqtt", "MQTT sensor reading", None,
            "MQTT is off: start the example with SWITCHBOARD_MQTT_BROKER=mqtt://127.0.0.1:1883 (a broker, e.g. Mosquitto).",
        )
    broker = (options.get("brokers") or ["mqtt://127.0.0.1:1883"])[0]
    location = broker.split("://", 1)[-1].rsplit("@", 1)[-1]
    host, _, port = location.partition(":")
    command = f"mosquitto_pub -h {host} -p {port or 1883} -t switchboard-demo/sensors/{room}/temp -m 21.5"
    return Command("mqtt", "MQTT sensor reading", command, "Readings appear in the chat room “sensors”.")


def sms_command(body: str = "hours") -> Command:
    """A signed Twilio webhook for ``curl``: what Twilio would POST when someone texts ``body``.

    Only with the example's placeholder auth token: a page that signs requests with a
    real token would let anyone who sees it forge webhooks. The MessageSid is new on
    every page view, because a webhook whose sid was seen is answered as a replay.
    """
    options = _protocols().get("sms")
    if not options:
        return Command("sms", "SMS (Twilio webhook)", None, "The sms plugin is not enabled.")
    url = options["public_base_url"].rstrip("/") + options.get("inbound_path", "/sms/inbound")
    if options.get("auth_token") != PLACEHOLDER_TOKEN:
        return Command("sms", "SMS (Twilio webhook)", None,
                       f"Text your Twilio number; its “A message comes in” webhook is {url} (HTTP POST).")
    from twilio.request_validator import RequestValidator

    params = {
        "MessageSid": "SM" + secrets.token_hex(16),
        "AccountSid": "AC" + "0" * 32,
        "From": "+15005550006",
        "To": "+15005550001",
        "Body": body,
    }
    signature = RequestValidator(options["auth_token"]).compute_signature(url, params)
    fields = " ".join(f"--data-urlencode {shlex.quote(f'{name}={value}')}" for name, value in params.items())
    command = f"curl -s {shlex.quote(url)} -H {shlex.quote(f'X-Twilio-Signature: {signature}')} {fields}"
    return Command("sms", "SMS (Twilio webhook)", command,
                   "Signed as Twilio signs it; the auto-responder answers in TwiML. Text “hours”, “later …” or anything.")


def terminal_commands() -> list[Command]:
    """Every copy-paste command of the front page, in its order."""
    return [udp_command(), smtp_command(), mqtt_command(), sms_command()]
