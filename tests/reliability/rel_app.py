"""The worker-side application of the reliability tests: one small raw ASGI app per protocol.

Why raw ASGI and not the consumer classes: these tests are about what the *gateway* does
with hostile input, faults and floods, so the worker side must be as predictable as
possible. Each handler answers in a way a test can recognise (``ok <n>``, ``ack:<n>``,
``<pid>:<text>``) and never echoes its reply channel back to a client, so a reply channel
seen by a client can only have come from the gateway.

Used in-process (``conftest.InProcessGateway``) and by worker processes
(``rel_settings.py`` names ``rel_app.application``).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import rel_uploads

from switchboard.gateway.layers import ChannelFull

Message = dict[str, Any]
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The protocols a worker running this app serves (``WORKER["protocols"]``).
PROTOCOLS = ["http", "websocket", "udp", "email", "sms", "webrtc", "mqtt"]

#: Counters a test can read in-process (one worker process: per process, not per instance).
SEEN: dict[str, int] = {"emails": 0, "sms": 0, "mqtt": 0, "udp": 0, "slow_ws_received": 0, "stream_full": 0}


async def http_app(scope: Scope, receive: Receive, send: Send) -> None:
    """``/slow?s=N`` answers after N seconds (drain tests); ``/upload/...`` see rel_uploads;
    anything else ``ok <body length>``."""
    if scope["path"].startswith("/upload/"):
        await rel_uploads.application(scope, receive, send)
        return
    body = b""
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            return
        body += event.get("body", b"")
        if not event.get("more_body", False):
            break
    if scope["path"] == "/slow":
        mark("slow-started")
        seconds = float(parse_qs(scope["query_string"].decode()).get("s", ["1"])[0])
        await asyncio.sleep(seconds)
        text = b"slow done"
    elif scope["path"] == "/pid":
        text = str(os.getpid()).encode()
    else:
        text = b"ok %d" % len(body)
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [[b"content-type", b"text/plain"], [b"content-length", str(len(text)).encode()]],
    })
    await send({"type": "http.response.body", "body": text, "more_body": False})


async def websocket_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Paths: ``/ws/echo`` echoes, ``/ws/pid`` prefixes the worker pid, ``/ws/hold`` blocks on
    ``hold`` (a worker busy mid-message), ``/ws/slow`` reads slowly, ``/ws/stream`` sends a
    fast stream on request (``<count>:<size>``), ``/ws/room/<name>`` is a chat room."""
    path = scope["path"]
    if path.startswith("/ws/room/"):
        await room_app(scope, receive, send)
        return
    while True:
        event = await receive()
        kind = event["type"]
        if kind == "websocket.connect":
            # On a resumed connection the worker swallows this accept (the client has it).
            await send({"type": "websocket.accept"})
        elif kind == "websocket.disconnect":
            return
        elif kind == "websocket.receive":
            text, data = event.get("text"), event.get("bytes")
            if path == "/ws/slow":
                SEEN["slow_ws_received"] += 1
                await asyncio.sleep(0.2)
            elif path == "/ws/stream" and text is not None:
                await _stream(send, text)
            elif path == "/ws/hold" and text == "hold":
                await asyncio.sleep(3600)
            elif path in ("/ws/pid", "/ws/hold"):
                await send({"type": "websocket.send", "text": f"{os.getpid()}:{text if text is not None else ''}"})
            elif text is not None:
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": data or b""})


async def room_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A chat room, as the example's ChatConsumer: every frame goes to the room's group, each
    member sends each group message to its client. ``burst:<n>`` posts ``n`` numbered
    messages at once (one client's burst) after the test has paused the gateway: the
    worker marks ``burst-armed`` and waits for the file ``go`` in ``$REL_MARK_DIR``.

    It joins its group on connect and never leaves it: dropping a closed connection's
    membership is the gateway's job (the consumer may have been killed), which the
    reliability tests check.
    """
    from switchboard.gateway.layers import get_channel_layer

    layer = get_channel_layer()
    group = "room." + scope["path"].rstrip("/").rsplit("/", 1)[-1]
    while True:
        event = await receive()
        kind = event["type"]
        if kind == "websocket.connect":
            if not scope.get("resumed"):
                await layer.group_add(group, scope["reply_channel"])
            await send({"type": "websocket.accept"})
        elif kind == "websocket.disconnect":
            return
        elif kind == "websocket.receive":
            text = event.get("text") or ""
            if text.startswith("burst:"):
                mark("burst-armed")
                await _wait_for_mark("go")
                for index in range(int(text.split(":", 1)[1])):
                    await layer.group_send(group, {"type": "room.message", "text": f"burst-{index}"})
                mark("burst-posted")
            else:
                await layer.group_send(group, {"type": "room.message", "text": text})
        elif kind == "room.message":
            await send({"type": "websocket.send", "text": event["text"]})


async def _wait_for_mark(name: str) -> None:
    directory = os.environ.get("REL_MARK_DIR")
    while directory and not await asyncio.to_thread(os.path.exists, os.path.join(directory, name)):
        await asyncio.sleep(0.02)


async def _stream(send: Send, request: str) -> None:
    """Send ``count`` messages of ``size`` bytes as fast as the layer takes them."""
    count_text, _, size_text = request.partition(":")
    payload = b"x" * int(size_text or "1")
    for _ in range(int(count_text or "1")):
        try:
            await send({"type": "websocket.send", "bytes": payload})
        except ChannelFull:
            SEEN["stream_full"] += 1
            await asyncio.sleep(0.01)
    mark("stream-done")


def mark(name: str) -> None:
    """Leave a marker file in ``$REL_MARK_DIR``: how a test in another process learns the
    worker reached a point (a view in flight, a stream sent) without guessing with sleeps."""
    directory = os.environ.get("REL_MARK_DIR")
    if directory:
        with open(os.path.join(directory, name), "a", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()}\n")


async def udp_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer every datagram with ``ack:<its length>``."""
    while True:
        event = await receive()
        if event["type"] == "udp.datagram":
            SEEN["udp"] += 1
            await send({"type": "udp.send", "data": b"ack:%d" % len(event["data"]), "address": event["client"]})


async def email_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Count accepted messages; nothing goes back (specs/email.md)."""
    while True:
        event = await receive()
        if event["type"] == "email.received":
            SEEN["emails"] += 1


async def sms_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answer an incoming message with an inline reply naming its length."""
    event = await receive()
    if event["type"] == "sms.received":
        SEEN["sms"] += 1
        await send({"type": "sms.reply", "body": f"got {len(event['body'])}"})


async def webrtc_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Echo data channel messages on the channel they came from."""
    while True:
        event = await receive()
        if event["type"] == "webrtc.disconnect":
            return
        if event["type"] == "webrtc.datachannel.message":
            reply: Message = {"type": "webrtc.datachannel.send", "label": event["label"]}
            if event.get("text") is not None:
                reply["text"] = event["text"]
            else:
                reply["bytes"] = event.get("bytes") or b""
            await send(reply)


async def mqtt_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A message on ``<prefix>/in/...`` is answered on ``<prefix>/out`` with its topic and size."""
    while True:
        event = await receive()
        if event["type"] != "mqtt.message":
            continue
        SEEN["mqtt"] += 1
        prefix, found, _ = event["topic"].partition("/in/")
        if found:
            answer = json.dumps({"topic": event["topic"], "size": len(event["payload"])}).encode()
            await send({"type": "mqtt.publish", "topic": prefix + "/out", "payload": answer, "qos": 1})


HANDLERS: dict[str, Callable[[Scope, Receive, Send], Awaitable[None]]] = {
    "http": http_app,
    "websocket": websocket_app,
    "udp": udp_app,
    "email": email_app,
    "sms": sms_app,
    "webrtc": webrtc_app,
    "mqtt": mqtt_app,
}


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    """Dispatch on the scope type, as ``ProtocolTypeRouter`` would."""
    await HANDLERS[scope["type"]](scope, receive, send)
