"""The console's ASGI application: one page, its JSON API and its server-sent events.

Routes, below the console's prefix (``""`` for ``switchboard console``, ``CONSOLE.mount``
on a gateway):

| Method and path | Access | Answer |
|---|---|---|
| ``GET /`` | anyone | the page (no data in it: it asks the API, with the user's token if any) |
| ``GET /static/<file>`` | anyone | the page's script, styles and the vendored uPlot |
| ``GET /api/frame`` | read | JSON: who you are, the latest frame, the history |
| ``GET /api/stream`` | read | ``text/event-stream``: ``hello`` (as /api/frame), then a ``frame`` per refresh |
| ``GET /api/tail?protocol=P`` or ``?channel=C`` | read | event stream of a live tail (``tail`` events) |
| ``GET /api/deadletters?channel=C`` | read | JSON: the oldest dead letters of a durable channel, summarized |
| ``POST /api/deadletters/replay`` / ``drop`` | manage + CSRF | JSON body ``{"channel": C, "ids": [...] or null}`` |

Server-sent events rather than a WebSocket: updates only flow one way, SSE is plain HTTP
(it passes every proxy the site already passes) and the page reads it with ``fetch``, so
it can send an ``Authorization`` header, which ``EventSource`` cannot.

Bad input gets a status and a line of text, never a traceback: 400 malformed (bad JSON,
wrong content type, unknown fields), 401/403 (access.py), 404, 405 with ``Allow``, 413
past ``CONSOLE.max_body_size``, 414 for an over-long URL. Nothing is changed by a refused
request, and each refusal is logged (rate-limited).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qs

from switchboard.gateway.asgi import BodyTooLarge, ClientGone, Receive, Scope, Send, read_body, refuse_websocket
from switchboard.gateway.tap import summarize

from .access import Access, Gate, Refused, header
from .collector import Collector, Subscription, tap_name
from .deadletters import INSPECT_LIMIT, NotDurable

logger = logging.getLogger("switchboard.console")


#: Seconds between keep-alive comments on an idle event stream (proxies close silent ones).
KEEPALIVE: Final = 15.0
MAX_PATH: Final = 512
MAX_QUERY: Final = 1024
MAX_IDS: Final = 1000
#: A protocol or (durable, named) channel name, as the layer allows them.
_NAME: Final = re.compile(r"[a-zA-Z\d\-_.]{1,100}")

_STATIC_TYPES: Final = {
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".html": b"text/html; charset=utf-8",
    ".txt": b"text/plain; charset=utf-8",
}
_SECURITY_HEADERS: Final = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        b"base-uri 'self'; form-action 'none'; frame-ancestors 'none'",
    ),
]


class _BadRequest(Exception):
    def __init__(self, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or []


def _load_static() -> dict[str, tuple[bytes, bytes]]:
    """Every file of ``switchboard/console/static`` (small: read once, served from memory)."""
    files: dict[str, tuple[bytes, bytes]] = {}
    root = resources.files("switchboard.console") / "static"

    def walk(folder: Any, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            else:
                suffix = "." + entry.name.rpartition(".")[2]
                files[prefix + entry.name] = (entry.read_bytes(), _STATIC_TYPES.get(suffix, b"application/octet-stream"))

    walk(root, "")
    return files


class ConsoleApp:
    """The ASGI app; ``prefix`` is where it is mounted (no trailing slash)."""

    def __init__(self, collector: Collector, gate: Gate, *, prefix: str = "", max_body_size: int = 16 * 1024) -> None:
        self.collector = collector
        self.gate = gate
        self.prefix = prefix.rstrip("/")
        self.max_body_size = max_body_size
        self.static = _load_static()
        self.closing = asyncio.Event()

    def close(self) -> None:
        """End every open event stream (the server is stopping)."""
        self.closing.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") == "websocket":
            await refuse_websocket(receive, send)  # nothing here speaks WebSocket (the client sees 403)
            return
        if scope.get("type") != "http":
            return
        try:
            await self._route(scope, receive, send)
        except Refused as refusal:
            self.gate.refused(scope, refusal)
            extra = [(b"www-authenticate", b'Bearer realm="switchboard console"')] if refusal.status == 401 else []
            await _text(send, refusal.status, refusal.text, extra)
        except _BadRequest as bad:
            self.gate.log.warning(str(bad.status), "%s %s: %s", scope.get("method"), scope.get("path"), bad.text.strip())
            await _text(send, bad.status, bad.text, bad.headers)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        query = bytes(scope.get("query_string", b""))
        if len(path) > MAX_PATH or len(query) > MAX_QUERY:
            raise _BadRequest(414, "URI Too Long\n")
        relative = path[len(self.prefix) :] if path.startswith(self.prefix) else path
        method = str(scope.get("method", "GET"))
        if relative == "":
            _method(method, ("GET", "HEAD"))
            location = (self.prefix + "/").encode("latin-1")
            headers = [(b"location", location), (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 308, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        if relative == "/" or relative.startswith("/static/"):
            _method(method, ("GET", "HEAD"))
            name = "index.html" if relative == "/" else relative[len("/static/") :]
            found = self.static.get(name)
            if found is None:
                raise _BadRequest(404, "Not Found\n")
            body, content_type = found
            cache = b"no-cache" if name == "index.html" else b"public, max-age=3600"
            shown = body if method == "GET" else b""
            await _respond(send, 200, shown, content_type, [(b"cache-control", cache)], length=len(body))
            return
        if relative == "/api/frame":
            _method(method, ("GET",))
            access = await self.gate.identify(scope)
            await _json(send, 200, await self._hello(access))
        elif relative == "/api/stream":
            _method(method, ("GET",))
            access = await self.gate.identify(scope)
            await self._stream_frames(access, receive, send)
        elif relative == "/api/tail":
            _method(method, ("GET",))
            await self.gate.identify(scope)
            await self._stream_tail(_tail_filter(query), receive, send)
        elif relative == "/api/deadletters":
            _method(method, ("GET",))
            await self.gate.identify(scope)
            await self._inspect(query, send)
        elif relative in ("/api/deadletters/replay", "/api/deadletters/drop"):
            _method(method, ("POST",))
            access = await self.gate.identify(scope)
            self.gate.check_action(scope, access)
            request = await self._json_body(scope, receive)
            await self._act(relative.rpartition("/")[2], request, access, send)
        else:
            raise _BadRequest(404, "Not Found\n")

    # -- reads -------------------------------------------------------------------------

    async def _hello(self, access: Access) -> dict[str, Any]:
        collector = self.collector
        return {
            "access": {"who": access.who, "via": access.via, "manage": access.manage, "csrf": self.gate.csrf_token(access)},
            "interval": collector.interval,
            "frame": collector.frame,
            "history": collector.history.as_dict(),
            "deadletters": collector.deadletters is not None,
        }

    async def _stream_frames(self, access: Access, receive: Receive, send: Send) -> None:
        subscription = self.collector.subscribe("frame")
        try:
            await self._stream(receive, send, subscription, "frame", first=("hello", await self._hello(access)))
        finally:
            self.collector.unsubscribe(subscription)

    async def _stream_tail(self, tap: str, receive: Receive, send: Send) -> None:
        subscription = self.collector.subscribe("tail", tap)
        try:
            await self.collector.start_tail(subscription)
            await self._stream(receive, send, subscription, "tail", first=("tail-started", {"tap": tap, "time": time.time()}))
        finally:
            self.collector.unsubscribe(subscription)

    async def _stream(self, receive: Receive, send: Send, subscription: Subscription, event: str, first: tuple[str, Any]) -> None:
        """Write ``first``, then each item of ``subscription``, until the client leaves or we stop."""
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-store"),
                    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
                    *_SECURITY_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": _sse(*first), "more_body": True})

        async def pump() -> None:
            while True:
                try:
                    item = await asyncio.wait_for(subscription.queue.get(), KEEPALIVE)
                except TimeoutError:
                    await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
                    continue
                await send({"type": "http.response.body", "body": _sse(event, item), "more_body": True})

        async def client_left() -> None:
            while (await receive()).get("type") != "http.disconnect":
                pass

        tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(client_left()), asyncio.ensure_future(self.closing.wait())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None and not isinstance(task.exception(), OSError):
                logger.warning("console event stream ended: %r", task.exception())
        try:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception:  # the client is gone; nothing to finish
            pass

    async def _inspect(self, query: bytes, send: Send) -> None:
        deadletters = self.collector.deadletters
        if deadletters is None:
            raise _BadRequest(404, "Not Found: the layer has no durable channels (no dead letters)\n")
        channel = _one(parse_qs(query.decode("latin-1")), "channel")
        if channel is None or not _NAME.fullmatch(channel):
            raise _BadRequest(400, "Bad Request: ?channel=<durable channel name> is required\n")
        try:
            letters = await deadletters.inspect(channel, INSPECT_LIMIT)
        except NotDurable as exc:
            raise _BadRequest(404, f"Not Found: {exc}\n") from None
        # Summarized and redacted here, whatever the store returned: a page shows no more than a log line.
        await _json(send, 200, {"channel": channel, "letters": [summarize(letter) for letter in letters[:INSPECT_LIMIT]]})

    # -- actions -----------------------------------------------------------------------

    async def _json_body(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        content_type = (header(scope, b"content-type") or "").partition(";")[0].strip().lower()
        if content_type != "application/json":
            raise _BadRequest(400, "Bad Request: the body must be application/json\n")
        try:
            raw = await read_body(scope, receive, self.max_body_size)
        except BodyTooLarge:
            raise _BadRequest(413, "Payload Too Large\n", [(b"connection", b"close")]) from None
        except ClientGone:
            raise _BadRequest(400, "Bad Request: the client went away\n") from None
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _BadRequest(400, "Bad Request: the body is not valid JSON\n") from None
        if not isinstance(body, dict):
            raise _BadRequest(400, "Bad Request: the body must be a JSON object\n")
        return body

    async def _act(self, action: str, body: dict[str, Any], access: Access, send: Send) -> None:
        deadletters = self.collector.deadletters
        if deadletters is None:
            raise _BadRequest(404, "Not Found: the layer has no durable channels (no dead letters)\n")
        unknown = set(body) - {"channel", "ids"}
        channel, ids = body.get("channel"), body.get("ids")
        if unknown or not isinstance(channel, str) or not _NAME.fullmatch(channel):
            raise _BadRequest(400, 'Bad Request: expected {"channel": "<name>", "ids": [...] or null}\n')
        if ids is not None and (not isinstance(ids, list) or len(ids) > MAX_IDS or not all(isinstance(i, str) for i in ids)):
            raise _BadRequest(400, f"Bad Request: ids must be null or a list of at most {MAX_IDS} strings\n")
        try:
            if action == "replay":
                result = await deadletters.replay(channel, ids)
            else:
                result = await deadletters.drop(channel, ids)
        except NotDurable as exc:
            raise _BadRequest(404, f"Not Found: {exc}\n") from None
        logger.warning(
            "console: %s %s dead letters of %s (%s): %s",
            access.who,
            action,
            channel,
            "all" if ids is None else f"{len(ids)} id(s)",
            result,
        )
        await _json(send, 200, {"channel": channel, "action": action, **result})


def _method(method: str, allowed: tuple[str, ...]) -> None:
    if method not in allowed:
        raise _BadRequest(405, "Method Not Allowed\n", [(b"allow", ", ".join(allowed).encode())])


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values and len(values) == 1 else None


def _tail_filter(query: bytes) -> str:
    try:
        parsed = parse_qs(query.decode("latin-1"), strict_parsing=bool(query), max_num_fields=4)
    except ValueError:
        raise _BadRequest(400, "Bad Request: malformed query string\n") from None
    protocol, channel = _one(parsed, "protocol"), _one(parsed, "channel")
    if (protocol is None) == (channel is None) or set(parsed) - {"protocol", "channel"}:
        raise _BadRequest(400, "Bad Request: give exactly one of ?protocol=<scope type> or ?channel=<name>\n")
    name = protocol or channel
    assert name is not None
    if not _NAME.fullmatch(name) or len(name) > 100:
        raise _BadRequest(400, "Bad Request: not a protocol or channel name\n")
    return tap_name(protocol, channel)


def _sse(event: str, data: Any) -> bytes:
    """One server-sent event; JSON never contains a raw newline, so one ``data:`` line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    length: int | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body) if length is None else length).encode()),
                *_SECURITY_HEADERS,
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, data: Any) -> None:
    body = json.dumps(data, separators=(",", ":"), default=str).encode()
    await _respond(send, status, body, b"application/json", [(b"cache-control", b"no-store")])


async def _text(send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await _respond(send, status, text.encode(), b"text/plain; charset=utf-8", [(b"cache-control", b"no-store"), *(headers or [])])
