"""SMS webhooks on the durable pool: Twilio's 200 after the durable write; late replies by REST.

Real HTTP (aiohttp) to the HTTP plugin's port, webhooks signed with twilio's
``RequestValidator``, and a local stand-in for Twilio's REST API that records requests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support.waiting import wait_until

from switchboard.gateway.layers import ChannelLayer
from switchboard.gateway.layers.durable import delivery_of

from .conftest import ACCOUNT_SID, SENDER, TWILIO_NUMBER, TwilioApiStub, inbound_params, new_sid

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:twilio.*")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'
Message = dict[str, Any]


def slow_app(release: asyncio.Event, runs: list[Message], replies: int = 1) -> Any:
    """Waits for ``release`` (past the webhook's deadline), then replies ``replies`` times."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        event = await receive()
        runs.append(event)
        await release.wait()
        for number in range(replies):
            await send({"type": "sms.reply", "body": f"late answer {number}"})

    return app


async def test_the_webhook_is_answered_only_once_the_event_is_stored(stack: Any, layer: ChannelLayer) -> None:
    running = await stack(None, reply_deadline=0.2)  # no worker: the event waits, stored
    sid = new_sid("SM")
    answer = await running.post("/sms/inbound", inbound_params("keep me", sid=sid))
    assert (answer.status, answer.text) == (200, EMPTY_TWIML)
    assert await layer.durable.info("switchboard.sms") == (1, 0)
    envelope = await asyncio.wait_for(layer.receive("switchboard.sms"), 10)
    assert envelope["event"]["message_sid"] == sid and delivery_of(envelope) is not None


async def test_a_reply_after_the_deadline_goes_out_through_the_rest_api(
    stack: Any, layer: ChannelLayer, api: TwilioApiStub
) -> None:
    release = asyncio.Event()
    runs: list[Message] = []
    running = await stack(slow_app(release, runs, replies=2), reply_deadline=0.2, account_sid=ACCOUNT_SID,
                          api_base_url=api.url)
    answer = await running.post("/sms/inbound", inbound_params("need help"))
    assert (answer.status, answer.text) == (200, EMPTY_TWIML)  # the deadline passed
    await wait_until(lambda: len(runs) == 1, what="the consumer to have the event")
    assert delivery_of(runs[0]) is not None
    release.set()
    request = await api.wait_for_body(lambda body: body.startswith("late answer"))
    assert request.form["To"] == [SENDER] and request.form["From"] == [TWILIO_NUMBER]
    assert request.form["Body"] == ["late answer 0"]
    # One reply per incoming message: the second is dropped, not sent.
    await wait_until(lambda: running.sms.stats()["late_replies_duplicate"] == 1, what="the second reply dropped")
    assert running.sms.stats()["late_replies_sent"] == 1
    assert api.bodies().count("late answer 1") == 0


async def test_an_inline_answer_closes_the_webhook(stack: Any, layer: ChannelLayer) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "sms.reply", "body": "fast"})

    running = await stack(app, reply_deadline=5)
    answer = await running.post("/sms/inbound", inbound_params("hi"))
    assert answer.status == 200 and "fast" in answer.text
    await wait_until(lambda: not running.gateway.connections, what="the webhook's connection closed")
    await wait_until(lambda: layer.stats.durable_acked == 1, what="the event acknowledged")


async def test_the_late_reply_window_is_bounded(stack: Any, layer: ChannelLayer) -> None:
    running = await stack(None, reply_deadline=0.1, late_reply_max=2)
    for number in range(4):
        answer = await running.post("/sms/inbound", inbound_params(f"m{number}"))
        assert answer.status == 200
    # Oldest closed first: never more than late_reply_max answered webhooks kept open.
    assert len(running.gateway.connections) == 2
