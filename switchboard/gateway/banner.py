"""The start-up banner: one short block that says where to point a client and what runs.

A person who just started a server wants three answers at once, as ``runserver`` and
uvicorn give them: which URL to open, what else is listening (UDP, SMTP, webhooks, a
broker), and whether this process is wired to the others (the layer, the channels a
worker reads). Plugins say where they are reached (``ProtocolPlugin.endpoints``); this
module only lays the lines out. It is logged as one record, so JSON logs stay one object
per line and the redaction filter sees it (the layer URL is redacted here as well).
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import TYPE_CHECKING, Any

from . import logs

if TYPE_CHECKING:
    from .layers import ChannelLayer
    from .plugins import ProtocolPlugin
    from .server import Gateway
    from .worker import Worker

#: What each command runs, in the banner's first line.
ROLES = {
    "run": "gateway and worker in one process",
    "gateway": "gateway",
    "worker": "worker",
}


def version_text() -> str:
    """``switchboard 0.1.0 (Django 5.2, Python 3.12.3 on Linux)``: what ``--version`` prints."""
    from switchboard import __version__

    try:
        django = "Django " + package_version("django")
    except PackageNotFoundError:
        django = "Django not installed"
    python = f"{platform.python_implementation()} {platform.python_version()} on {platform.system()}"
    return f"switchboard {__version__} ({django}, {python})"


def layer_text(layer: ChannelLayer) -> str:
    """The layer and where it is, with passwords in URLs masked."""
    storage = getattr(layer, "storage", layer)
    name = type(storage).__name__.removesuffix("Storage").lower() or type(storage).__name__
    if name == "memory":
        return "in-memory (this process only)"
    hosts = getattr(storage, "hosts", None)
    text = name
    if isinstance(hosts, (list, tuple)) and hosts:
        text += " " + ", ".join(logs.REDACTOR.redact_text(str(host)) for host in hosts)
    prefix = getattr(storage, "prefix", None)
    if isinstance(prefix, str):
        text += f" (key prefix {prefix!r})"
    return text


def worker_text(worker: Worker) -> str:
    """What a worker consumes: protocols (their pool channels) and named channels."""
    parts = []
    if worker.protocols:
        parts.append("protocols " + ", ".join(worker.protocols))
    if worker.channels:
        parts.append("channels " + ", ".join(worker.channels))
    return "; ".join(parts) or "nothing (the application routes no protocol and no channel)"


def render(
    command: str,
    *,
    layer: ChannelLayer,
    gateway: Gateway | None = None,
    plugins: Iterable[ProtocolPlugin[Any]] = (),
    worker: Worker | None = None,
    metrics_address: tuple[str, int] | None = None,
    notes: Iterable[str] = (),
) -> str:
    """The banner of a ``command`` process, as one multi-line text."""
    lines = [f"{version_text().split(' (')[0]} running: {ROLES.get(command, command)}"]
    if gateway is not None:
        for plugin in plugins:
            try:
                endpoints = plugin.endpoints(gateway) or ["started"]
            except Exception as exc:  # a third-party plugin's bug must not stop a started server
                endpoints = [f"started (endpoints() failed: {exc!r})"]
            for index, endpoint in enumerate(endpoints):
                lines.append(_row(plugin.name if index == 0 else "", endpoint))
    lines.append(_row("layer", layer_text(layer)))
    if worker is not None:
        lines.append(_row("worker", worker_text(worker)))
    if metrics_address is not None:
        host, port = metrics_address
        lines.append(_row("metrics", f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"))
    else:
        lines.append(_row("metrics", "off (--metrics-bind HOST:PORT serves Prometheus metrics)"))
    lines.extend(f"  {note}" for note in notes)
    lines.append("  Quit with CONTROL-C.")
    return "\n".join(lines)


def _row(label: str, text: str) -> str:
    return f"  {label:<8} {text}"
