"""The SMS consumer classes on the real stack: inline replies, deferred sends, statuses."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from support.waiting import wait_until

from switchboard.consumers import ProtocolTypeRouter
from switchboard.consumers.sms import (
    OUTBOUND_CHANNEL,
    IncomingSms,
    SmsConsumer,
    SmsStatus,
    SyncSmsConsumer,
    reply_message,
    send_message,
    send_sms,
    send_sms_sync,
)
from switchboard.gateway.layers import ChannelLayer
from switchboard.gateway.specs import WORKER_TO_GATEWAY, validate_message
from switchboard.protocols import _sms_outbound

from .conftest import ACCOUNT_SID, SENDER, TWILIO_NUMBER, TwilioApiStub, inbound_params, new_sid, status_params

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:twilio.*")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'

RECEIVED: list[IncomingSms] = []
STATUSES: list[SmsStatus] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    RECEIVED.clear()
    STATUSES.clear()


class Responder(SmsConsumer):
    async def message_received(self, sms: IncomingSms) -> None:
        RECEIVED.append(sms)
        if sms.body == "silent":
            return
        if sms.body == "boom":
            raise RuntimeError("consumer bug")
        if sms.body.startswith("later"):
            await self.send_sms(sms.from_, "deferred " + sms.body, from_=sms.to, media=["https://example.com/x.png"])
            return
        await self.reply(f"echo: {sms.body}", media=[m.url for m in sms.media])

    async def status_received(self, status: SmsStatus) -> None:
        STATUSES.append(status)


class SyncResponder(SyncSmsConsumer):
    def message_received(self, sms: IncomingSms) -> None:
        RECEIVED.append(sms)
        if sms.body.startswith("later"):
            self.reply()
            self.send_sms(sms.from_, "sync deferred", from_=sms.to)
        else:
            self.reply(f"sync echo: {sms.body}")

    def status_received(self, status: SmsStatus) -> None:
        STATUSES.append(status)


@pytest.fixture(params=[Responder, SyncResponder], ids=["async", "sync"])
def consumer(request: pytest.FixtureRequest) -> Any:
    return request.param


async def test_consumer_replies_inline(stack: Any, consumer: Any) -> None:
    running = await stack(ProtocolTypeRouter({"sms": consumer.as_asgi()}))
    answer = await running.post("/sms/inbound", inbound_params("hello", media=[("https://m.test/1", "image/gif")]))
    assert answer.status == 200
    expected = "echo: hello" if consumer is Responder else "sync echo: hello"
    assert f"<Message>{expected}" in answer.text
    (sms,) = RECEIVED
    assert (sms.from_, sms.to, sms.body, sms.account_sid) == (SENDER, TWILIO_NUMBER, "hello", ACCOUNT_SID)
    assert sms.media[0].url == "https://m.test/1" and sms.media[0].content_type == "image/gif"
    # The instance ended after its one event.
    await wait_until(lambda: not running.worker.instances, what="instance finished")


async def test_consumer_defers_a_send_through_the_api(stack: Any, consumer: Any, api: TwilioApiStub) -> None:
    running = await stack(ProtocolTypeRouter({"sms": consumer.as_asgi()}), account_sid=ACCOUNT_SID, api_base_url=api.url)
    answer = await running.post("/sms/inbound", inbound_params("later please"))
    assert (answer.status, answer.text) == (200, EMPTY_TWIML)
    (request,) = await api.wait_for(1)
    assert request.field("To") == SENDER and request.field("From") == TWILIO_NUMBER
    if consumer is Responder:
        assert request.form["Body"] == ["deferred later please"]
        assert request.form["MediaUrl"] == ["https://example.com/x.png"]
    else:
        assert request.form["Body"] == ["sync deferred"]
    assert running.sms.stats()["replies_empty"] == 1


async def test_no_reply_and_a_failing_handler_answer_twilio_at_once(stack: Any) -> None:
    running = await stack(ProtocolTypeRouter({"sms": Responder.as_asgi()}), reply_deadline=10)
    for body in ("silent", "boom"):
        answer = await running.post("/sms/inbound", inbound_params(body))
        assert (answer.status, answer.text) == (200, EMPTY_TWIML)
    stats = running.sms.stats()
    assert stats["replies_empty"] == 2 and "replies_deadline" not in stats
    await wait_until(lambda: running.worker.stats.instances_failed == 1, what="the failure counted by the worker")


async def test_status_callback_reaches_status_received(stack: Any, consumer: Any) -> None:
    running = await stack(ProtocolTypeRouter({"sms": consumer.as_asgi()}))
    sid = new_sid()
    answer = await running.post("/sms/status", status_params(sid, "failed", ErrorCode="30006"))
    assert answer.status == 204
    await wait_until(lambda: len(STATUSES) == 1, what="status_received")
    (status,) = STATUSES
    assert (status.message_sid, status.status, status.error_code) == (sid, "failed", 30006)
    assert (status.to, status.from_) == (SENDER, TWILIO_NUMBER)
    await wait_until(lambda: not running.worker.instances, what="instance finished")


async def test_send_sms_from_outside_a_consumer(stack: Any, api: TwilioApiStub, layer: ChannelLayer) -> None:
    await stack(None, account_sid=ACCOUNT_SID, api_base_url=api.url)
    await send_sms(SENDER, "from a view", from_=TWILIO_NUMBER)
    await send_sms(SENDER, "explicit layer", messaging_service_sid="MG1", channel_layer=layer)
    requests = await api.wait_for(2)
    assert sorted(r.field("Body") for r in requests) == ["explicit layer", "from a view"]


async def test_send_sms_sync_from_sync_code(layer: ChannelLayer) -> None:
    # Sync code (a Django view under the worker, a sync consumer) runs in asgiref's thread.
    await sync_to_async(send_sms_sync)(SENDER, "sync view", from_=TWILIO_NUMBER)
    message = await asyncio.wait_for(layer.receive(OUTBOUND_CHANNEL), 2)
    assert message == {"type": "sms.send", "to": SENDER, "body": "sync view", "from": TWILIO_NUMBER}


def test_message_builders_match_the_spec() -> None:
    message = send_message(SENDER, "hi", from_=TWILIO_NUMBER, media=("https://e.test/a",), status_callback="https://e.test/s")
    validate_message(message, direction=WORKER_TO_GATEWAY)
    assert message == {"type": "sms.send", "to": SENDER, "body": "hi", "from": TWILIO_NUMBER,
                       "media": ["https://e.test/a"], "status_callback": "https://e.test/s"}
    validate_message(reply_message("x", ["https://e.test/a"]), direction=WORKER_TO_GATEWAY)
    validate_message(reply_message(), direction=WORKER_TO_GATEWAY)
    with pytest.raises(TypeError):
        send_message("", "x")
    with pytest.raises(TypeError):
        send_message(SENDER, b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        reply_message("x", "https://e.test/a")  # a str is not a list of URLs
    assert OUTBOUND_CHANNEL == _sms_outbound.OUTBOUND_CHANNEL


async def test_replying_twice_is_a_programming_error() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    consumer = Responder()
    consumer.base_send = send
    assert await consumer.reply("one") is True
    with pytest.raises(RuntimeError, match="already answered"):
        await consumer.reply("two")
    assert sent == [{"type": "sms.reply", "body": "one"}]


async def test_url_router_routes_sub_paths(stack: Any) -> None:
    from django.urls import path, re_path

    from switchboard.consumers import URLRouter

    class Support(SmsConsumer):
        async def message_received(self, sms: IncomingSms) -> None:
            await self.reply("support desk")

    app = ProtocolTypeRouter({"sms": URLRouter([path("sms/inbound/support", Support.as_asgi()),
                                                re_path(r"^sms/", Responder.as_asgi())])})
    running = await stack(app)
    assert "<Message>support desk</Message>" in (await running.post("/sms/inbound/support", inbound_params("x"))).text
    assert "<Message>echo: y</Message>" in (await running.post("/sms/inbound", inbound_params("y"))).text
