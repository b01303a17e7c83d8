"""WebSocket consumers: handshake, frames, close, disconnect, JSON, groups, deny."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import ImproperlyConfigured

from switchboard.consumers import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    DenyConnection,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)
from switchboard.gateway.layers import ChannelLayer


async def group_members(layer: ChannelLayer, group: str) -> list[str]:
    return await layer.storage.group_members(group, time.time(), layer.group_expiry)


# -- consumers under test ---------------------------------------------------------


class SyncEcho(WebsocketConsumer):
    log: list[Any] | None = None

    def connect(self) -> None:
        self.accept(subprotocol="chat.v1", headers={"X-Server": "switchboard"})

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "close please":
            self.close(code=4000, reason="asked")
        elif text_data == "last words":
            self.send(text_data="bye", close=True)
        elif text_data is not None:
            self.send(text_data=text_data.upper())
        else:
            self.send(bytes_data=bytes(reversed(bytes_data or b"")))

    def disconnect(self, code: int) -> None:
        assert self.log is not None
        self.log.append(("disconnect", code, threading.current_thread() is threading.main_thread()))


class AsyncEcho(AsyncWebsocketConsumer):
    log: list[Any] | None = None

    async def connect(self) -> None:
        await self.accept(subprotocol="chat.v1", headers={"X-Server": "switchboard"})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "close please":
            await self.close(code=4000, reason="asked")
        elif text_data == "last words":
            await self.send(text_data="bye", close=True)
        elif text_data is not None:
            await self.send(text_data=text_data.upper())
        else:
            await self.send(bytes_data=bytes(reversed(bytes_data or b"")))

    async def disconnect(self, code: int) -> None:
        assert self.log is not None
        self.log.append(("disconnect", code, threading.current_thread() is threading.main_thread()))


ECHOES = pytest.mark.parametrize("consumer", [SyncEcho, AsyncEcho], ids=["sync", "async"])


# -- handshake, frames, close, disconnect -------------------------------------------


@ECHOES
async def test_connect_accepts_with_subprotocol_and_headers(consumer: Any, run_app: Any, ws_scope: Any) -> None:
    runner = run_app(consumer.as_asgi(log=[]), ws_scope(reply_channel="gateway.t!a"))
    await runner.send_input({"type": "websocket.connect"})
    assert (await runner.receive_output()) == {
        "type": "websocket.accept",
        "subprotocol": "chat.v1",
        "headers": [(b"X-Server", b"switchboard")],
    }


@ECHOES
async def test_text_and_bytes_frames(consumer: Any, run_app: Any, ws_scope: Any) -> None:
    runner = run_app(consumer.as_asgi(log=[]), ws_scope(reply_channel="gateway.t!a"))
    await runner.send_input({"type": "websocket.connect"})
    await runner.receive_output()
    await runner.send_input({"type": "websocket.receive", "text": "hello"})
    assert (await runner.receive_output()) == {"type": "websocket.send", "text": "HELLO"}
    await runner.send_input({"type": "websocket.receive", "bytes": b"\x01\x02\x03"})
    assert (await runner.receive_output()) == {"type": "websocket.send", "bytes": b"\x03\x02\x01"}
    # A frame carrying both keys with text None is a bytes frame (ASGI servers send that).
    await runner.send_input({"type": "websocket.receive", "text": None, "bytes": b"ab"})
    assert (await runner.receive_output()) == {"type": "websocket.send", "bytes": b"ba"}


@ECHOES
async def test_close_with_code_and_reason(consumer: Any, run_app: Any, ws_scope: Any) -> None:
    runner = run_app(consumer.as_asgi(log=[]), ws_scope(reply_channel="gateway.t!a"))
    await runner.send_input({"type": "websocket.connect"})
    await runner.receive_output()
    await runner.send_input({"type": "websocket.receive", "text": "close please"})
    assert (await runner.receive_output()) == {"type": "websocket.close", "code": 4000, "reason": "asked"}


@ECHOES
async def test_send_with_close_true_sends_then_closes_without_code(
    consumer: Any, run_app: Any, ws_scope: Any
) -> None:
    runner = run_app(consumer.as_asgi(log=[]), ws_scope(reply_channel="gateway.t!a"))
    await runner.send_input({"type": "websocket.connect"})
    await runner.receive_output()
    await runner.send_input({"type": "websocket.receive", "text": "last words"})
    assert (await runner.receive_output()) == {"type": "websocket.send", "text": "bye"}
    assert (await runner.receive_output()) == {"type": "websocket.close"}


@pytest.mark.parametrize(
    ("consumer", "in_main_thread"), [(SyncEcho, False), (AsyncEcho, True)], ids=["sync", "async"]
)
async def test_disconnect_gets_code_and_ends_the_instance(
    consumer: Any, in_main_thread: bool, run_app: Any, ws_scope: Any
) -> None:
    log: list[Any] = []
    runner = run_app(consumer.as_asgi(log=log), ws_scope(reply_channel="gateway.t!a"))
    await runner.send_input({"type": "websocket.connect"})
    await runner.receive_output()
    await runner.send_input({"type": "websocket.disconnect", "code": 1001})
    await runner.wait()  # StopConsumer ended it cleanly
    assert log == [("disconnect", 1001, in_main_thread)]
    assert runner.sent_nothing_more()


@ECHOES
async def test_disconnect_without_code_reports_1005(consumer: Any, run_app: Any, ws_scope: Any) -> None:
    log: list[Any] = []
    runner = run_app(consumer.as_asgi(log=log), ws_scope(reply_channel="gateway.t!a"))
    await runner.send_input({"type": "websocket.connect"})
    await runner.receive_output()
    await runner.send_input({"type": "websocket.disconnect"})
    await runner.wait()
    assert log[0][:2] == ("disconnect", 1005)


async def test_default_connect_accepts_without_subprotocol(run_app: Any, ws_scope: Any) -> None:
    class Plain(AsyncWebsocketConsumer):
        pass

    class PlainSync(WebsocketConsumer):
        pass

    for consumer in (Plain, PlainSync):
        runner = run_app(consumer.as_asgi(), ws_scope(reply_channel="gateway.t!a"))
        await runner.send_input({"type": "websocket.connect"})
        assert (await runner.receive_output()) == {"type": "websocket.accept", "subprotocol": None}


async def test_send_without_data_is_an_error(run_app: Any, ws_scope: Any) -> None:
    class Empty(AsyncWebsocketConsumer):
        async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
            await self.send()

    runner = run_app(Empty.as_asgi(), ws_scope(reply_channel="gateway.t!a"))
    await runner.send_input({"type": "websocket.connect"})
    await runner.receive_output()
    await runner.send_input({"type": "websocket.receive", "text": "x"})
    with pytest.raises(ValueError, match="bytes_data or text_data"):
        await runner.wait()


# -- deny -------------------------------------------------------------------------------


class SyncDenier(WebsocketConsumer):
    def connect(self) -> None:
        raise DenyConnection()


class AsyncDenier(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        if self.scope["url_route"]["kwargs"].get("room") != "open":
            raise DenyConnection()
        await self.accept()


@pytest.mark.parametrize("consumer", [SyncDenier, AsyncDenier], ids=["sync", "async"])
async def test_deny_connection_closes_before_accept(consumer: Any, run_app: Any, ws_scope: Any) -> None:
    scope = ws_scope(reply_channel="gateway.t!a", url_route={"args": (), "kwargs": {"room": "closed"}})
    runner = run_app(consumer.as_asgi(), scope)
    await runner.send_input({"type": "websocket.connect"})
    assert (await runner.receive_output()) == {"type": "websocket.close"}
    assert runner.sent_nothing_more()


# -- JSON ---------------------------------------------------------------------------------


class SyncJson(JsonWebsocketConsumer):
    def receive_json(self, content: Any, **kwargs: Any) -> None:
        self.send_json({"echo": content, "thread": threading.current_thread() is threading.main_thread()})


class AsyncJson(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json({"echo": content, "thread": threading.current_thread() is threading.main_thread()})


@pytest.mark.parametrize(
    ("consumer", "in_main_thread"), [(SyncJson, False), (AsyncJson, True)], ids=["sync", "async"]
)
async def test_json_round_trip(consumer: Any, in_main_thread: bool, run_app: Any, ws_scope: Any) -> None:
    runner = run_app(consumer.as_asgi(), ws_scope(reply_channel="gateway.t!a"))
    await runner.send_input({"type": "websocket.connect"})
    await runner.receive_output()
    await runner.send_input({"type": "websocket.receive", "text": '{"n": [1, 2], "s": "é"}'})
    reply = await runner.receive_output()
    assert reply["type"] == "websocket.send"
    assert json.loads(reply["text"]) == {"echo": {"n": [1, 2], "s": "é"}, "thread": in_main_thread}


@pytest.mark.parametrize("consumer", [SyncJson, AsyncJson], ids=["sync", "async"])
async def test_json_consumer_refuses_binary_frames(consumer: Any, run_app: Any, ws_scope: Any) -> None:
    runner = run_app(consumer.as_asgi(), ws_scope(reply_channel="gateway.t!a"))
    await runner.send_input({"type": "websocket.connect"})
    await runner.receive_output()
    await runner.send_input({"type": "websocket.receive", "bytes": b"{}"})
    with pytest.raises(ValueError, match="No text section"):
        await runner.wait()


async def test_json_send_with_close_and_custom_encoding(run_app: Any, ws_scope: Any) -> None:
    class Compact(AsyncJsonWebsocketConsumer):
        @classmethod
        async def encode_json(cls, content: Any) -> str:
            return "custom:" + str(sorted(content))

        async def connect(self) -> None:
            await self.accept()
            await self.send_json({"b": 1, "a": 2}, close=4001)

    runner = run_app(Compact.as_asgi(), ws_scope(reply_channel="gateway.t!a"))
    await runner.send_input({"type": "websocket.connect"})
    await runner.receive_output()
    assert (await runner.receive_output()) == {"type": "websocket.send", "text": "custom:['a', 'b']"}
    assert (await runner.receive_output()) == {"type": "websocket.close", "code": 4001}


# -- groups ---------------------------------------------------------------------------------


class AsyncRoom(AsyncWebsocketConsumer):
    groups = ["room"]

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.channel_layer.group_send("room", {"type": "chat.message", "text": text_data})

    async def chat_message(self, message: dict[str, Any]) -> None:
        await self.send(text_data=f"{self.channel_name}:{message['text']}")


class SyncRoom(WebsocketConsumer):
    groups = ["room"]

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        assert threading.current_thread() is not threading.main_thread()
        async_to_sync(self.channel_layer.group_send)("room", {"type": "chat.message", "text": text_data})

    def chat_message(self, message: dict[str, Any]) -> None:
        self.send(text_data=f"{self.channel_name}:{message['text']}")


ROOMS = pytest.mark.parametrize("consumer", [SyncRoom, AsyncRoom], ids=["sync", "async"])


async def forward_like_the_gateway(layer: ChannelLayer, reply_channel: str, runner: Any) -> dict[str, Any]:
    """Do what the gateway does with a non-protocol message on a reply channel."""
    message = await layer.receive(reply_channel)
    assert not message["type"].startswith("websocket.")
    await runner.send_input(message)
    return message


@ROOMS
async def test_group_message_reaches_every_member_via_reply_channels(
    consumer: Any, layer: ChannelLayer, run_app: Any, ws_scope: Any
) -> None:
    alice = run_app(consumer.as_asgi(), ws_scope(reply_channel="gateway.t!alice"))
    bob = run_app(consumer.as_asgi(), ws_scope(reply_channel="gateway.t!bob"))
    for runner in (alice, bob):
        await runner.send_input({"type": "websocket.connect"})
        assert (await runner.receive_output())["type"] == "websocket.accept"
    assert sorted(await group_members(layer, "room")) == ["gateway.t!alice", "gateway.t!bob"]

    # Alice speaks: her handler group_sends; the message lands on both reply channels.
    await alice.send_input({"type": "websocket.receive", "text": "hi"})
    for name, runner in (("gateway.t!alice", alice), ("gateway.t!bob", bob)):
        forwarded = await forward_like_the_gateway(layer, name, runner)
        assert forwarded == {"type": "chat.message", "text": "hi"}
        assert (await runner.receive_output()) == {"type": "websocket.send", "text": f"{name}:hi"}

    # Leaving: the disconnecting member is discarded from the group, the other stays.
    await bob.send_input({"type": "websocket.disconnect", "code": 1000})
    await bob.wait()
    assert await group_members(layer, "room") == ["gateway.t!alice"]


@ROOMS
async def test_group_message_without_reply_channel_arrives_on_own_channel(
    consumer: Any, layer: ChannelLayer, run_app: Any, ws_scope: Any
) -> None:
    alice = run_app(consumer.as_asgi(), ws_scope())
    bob = run_app(consumer.as_asgi(), ws_scope())
    for runner in (alice, bob):
        await runner.send_input({"type": "websocket.connect"})
        await runner.receive_output()
    members = await group_members(layer, "room")
    assert len(members) == 2 and all(name.startswith("specific.") for name in members)

    await layer.group_send("room", {"type": "chat.message", "text": "from outside"})
    texts = sorted([(await alice.receive_output())["text"], (await bob.receive_output())["text"]])
    assert texts == sorted(f"{name}:from outside" for name in members)

    # A member's own group_send reaches everyone too, itself included.
    await bob.send_input({"type": "websocket.receive", "text": "from bob"})
    assert (await alice.receive_output())["text"].endswith(":from bob")
    assert (await bob.receive_output())["text"].endswith(":from bob")

    await alice.send_input({"type": "websocket.disconnect", "code": 1000})
    await bob.send_input({"type": "websocket.disconnect", "code": 1000})
    await alice.wait()
    await bob.wait()
    assert await group_members(layer, "room") == []


async def test_groups_without_a_layer_fail_loudly(run_app: Any, ws_scope: Any) -> None:
    class NoLayerRoom(AsyncWebsocketConsumer):
        channel_layer_alias = None
        groups = ["room"]

    runner = run_app(NoLayerRoom.as_asgi(), ws_scope())
    await runner.send_input({"type": "websocket.connect"})
    with pytest.raises(ImproperlyConfigured, match="no channel layer"):
        await runner.wait()


async def test_groups_attribute_is_per_instance(layer: ChannelLayer, run_app: Any, ws_scope: Any) -> None:
    class Joiner(AsyncWebsocketConsumer):
        async def websocket_connect(self, message: dict[str, Any]) -> None:
            self.groups.append(self.scope["url_route"]["kwargs"]["room"])
            await super().websocket_connect(message)

    def scope(name: str, room: str) -> dict[str, Any]:
        return ws_scope(reply_channel=name, url_route={"args": (), "kwargs": {"room": room}})

    first = run_app(Joiner.as_asgi(), scope("gateway.t!1", "a"))
    second = run_app(Joiner.as_asgi(), scope("gateway.t!2", "b"))
    for runner in (first, second):
        await runner.send_input({"type": "websocket.connect"})
        await runner.receive_output()
    assert await group_members(layer, "a") == ["gateway.t!1"]
    assert await group_members(layer, "b") == ["gateway.t!2"]
    assert Joiner.groups == []
