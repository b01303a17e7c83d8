"""The SMS plugin in-process: real HTTP webhooks, gateway core, worker, memory layer.

Plain ASGI apps pin the plugin's contract with the layer (what it sends, what it accepts
back, every refusal counted); the consumer classes are exercised in
``test_sms_consumer.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from switchboard.gateway.config import ConfigError
from switchboard.gateway.envelope import wrap
from switchboard.gateway.layers import ChannelLayer
from switchboard.gateway.specs import GATEWAY_TO_WORKER, validate_envelope, validate_message, validate_scope
from switchboard.protocols._sms_outbound import OUTBOUND_CHANNEL
from switchboard.protocols.sms import SmsPlugin

from .conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    PUBLIC_BASE_URL,
    SENDER,
    TWILIO_NUMBER,
    TwilioApiStub,
    inbound_params,
    new_sid,
    sign,
    sms_options,
    status_params,
    wait_until,
)

# twilio's async client uses aiohttp's deprecated BasicAuth: the library's business, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:twilio.*")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'

Message = dict[str, Any]


def recording_app(seen: list[tuple[dict[str, Any], Message]], reply: Callable[[Message], Message | None] | None = None) -> Any:
    """A worker application that records each (scope, event) and may send one reply."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        event = await receive()
        seen.append((scope, event))
        answer = reply(event) if reply is not None else None
        if answer is not None:
            await send(answer)

    return app


def check_against_spec(scope: dict[str, Any], event: Message) -> None:
    validate_scope(scope)
    validate_message(event, direction=GATEWAY_TO_WORKER)
    validate_envelope(wrap(scope["reply_channel"], scope, event))


# -- inbound, inline replies ------------------------------------------------------------


async def test_inline_reply_is_answered_as_twiml(stack: Any) -> None:
    seen: list[tuple[dict[str, Any], Message]] = []
    reply = {"type": "sms.reply", "body": "Thanks & bye <3", "media": ["https://example.com/a.png"]}
    running = await stack(recording_app(seen, lambda event: reply))
    sid = new_sid("MM")
    params = inbound_params("hi there", sid=sid, media=[("https://api.twilio.test/Media/ME1", "image/png")])

    answer = await running.post("/sms/inbound", params)

    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("application/xml")
    assert answer.text == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Message>Thanks &amp; bye &lt;3'
        "<Media>https://example.com/a.png</Media></Message></Response>"
    )
    ((scope, event),) = seen
    check_against_spec(scope, event)
    assert scope["type"] == "sms" and scope["path"] == "/sms/inbound"
    assert scope["public_url"] == PUBLIC_BASE_URL + "/sms/inbound"
    assert event["type"] == "sms.received"
    assert (event["from"], event["to"], event["body"], event["message_sid"]) == (SENDER, TWILIO_NUMBER, "hi there", sid)
    assert event["account_sid"] == ACCOUNT_SID
    assert event["num_media"] == 1
    assert event["media"] == [{"url": "https://api.twilio.test/Media/ME1", "content_type": "image/png"}]
    assert event["params"]["FromCity"] == "NEW YORK"
    stats = running.sms.stats()
    assert stats["messages_in"] == 1 and stats["replies"] == 1
    # The webhook's connection is closed once answered.
    await wait_until(lambda: not running.gateway.connections, what="connection closed")


async def test_reply_deadline_passing_answers_empty_twiml(stack: Any) -> None:
    seen: list[tuple[dict[str, Any], Message]] = []
    running = await stack(recording_app(seen), reply_deadline=0.3)  # the app never replies

    answer = await running.post("/sms/inbound", inbound_params("anyone?"))

    assert (answer.status, answer.text) == (200, EMPTY_TWIML)
    assert len(seen) == 1
    assert running.sms.stats()["replies_deadline"] == 1


async def test_empty_reply_answers_at_once_and_late_replies_are_orphaned(stack: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "sms.reply"})
        await send({"type": "sms.reply", "body": "too late"})

    running = await stack(app, reply_deadline=10)
    answer = await running.post("/sms/inbound", inbound_params("x"))
    assert (answer.status, answer.text) == (200, EMPTY_TWIML)
    stats = running.sms.stats()
    assert stats["replies_empty"] == 1 and "replies_deadline" not in stats


async def test_invalid_reply_answers_empty_twiml_and_is_counted(stack: Any) -> None:
    running = await stack(recording_app([], lambda event: {"type": "sms.reply", "body": b"bytes are not text"}))
    answer = await running.post("/sms/inbound", inbound_params("x"))
    assert (answer.status, answer.text) == (200, EMPTY_TWIML)
    assert running.sms.stats()["replies_invalid"] == 1

    running2 = await stack(recording_app([], lambda event: {"type": "sms.reply", "media": ["ftp://nope/x.png"]}),
                           inbound_path="/sms2/in", status_path="/sms2/status")
    answer = await running2.post("/sms2/in", inbound_params("x"))
    assert (answer.status, answer.text) == (200, EMPTY_TWIML)
    assert running2.sms.stats()["replies_invalid"] == 1


async def test_sub_paths_query_strings_and_repeated_fields_are_signed_as_twilio_signs_them(stack: Any) -> None:
    seen: list[tuple[dict[str, Any], Message]] = []
    running = await stack(recording_app(seen, lambda event: {"type": "sms.reply", "body": "ok"}))
    path = "/sms/inbound/support?tenant=7&x=%C3%A9"
    params = [*inbound_params("hi").items(), ("Extra", "b"), ("Extra", "a")]

    answer = await running.post(path, params, signature=sign(path, params))

    assert answer.status == 200 and "<Message>ok</Message>" in answer.text
    ((scope, event),) = seen
    check_against_spec(scope, event)
    assert scope["path"] == "/sms/inbound/support"
    assert scope["public_url"] == PUBLIC_BASE_URL + path
    assert event["params"]["Extra"] == "a"  # last value of a repeated field


# -- refusals: nothing reaches the layer -------------------------------------------------


async def test_missing_or_wrong_signatures_are_403_and_reach_nothing(stack: Any) -> None:
    seen: list[tuple[dict[str, Any], Message]] = []
    running = await stack(recording_app(seen))
    params = inbound_params("forged")
    local_url = f"http://127.0.0.1:{running.port}"
    signatures = [
        None,  # missing
        "bm90IGEgc2lnbmF0dXJl",  # garbage
        sign("/sms/inbound", params, token="some-other-token"),  # another account's token
        sign("/sms/inbound", params, base=local_url),  # signed for the gateway's own URL, not the public one
        sign("/sms/status", params),  # signed for the other endpoint
    ]
    for signature in signatures:
        answer = await running.post("/sms/inbound", params, signature=signature)
        assert answer.status == 403, answer
    tampered = dict(params, Body="tampered")
    answer = await running.post("/sms/inbound", tampered, signature=sign("/sms/inbound", params))
    assert answer.status == 403
    answer = await running.post("/sms/status", status_params(new_sid()), signature=None)
    assert answer.status == 403

    assert running.sms.stats()["rejected_signature"] == 7
    assert running.gateway.stats.events_sent == 0
    assert running.gateway.stats.connections_opened == 0
    assert running.layer.stats.sent == 0
    assert seen == []


async def test_bad_requests_get_http_errors_and_reach_nothing(stack: Any) -> None:
    seen: list[tuple[dict[str, Any], Message]] = []
    running = await stack(recording_app(seen, lambda event: {"type": "sms.reply"}), max_body_size=2048)
    params = inbound_params("x")

    get = await running.post("/sms/inbound", params, method="GET")
    assert (get.status, get.headers.get("Allow")) == (405, "POST")
    wrong_type = await running.post("/sms/inbound", params, data=b'{"Body": "x"}', content_type="application/json")
    assert wrong_type.status == 400
    not_utf8 = await running.post("/sms/inbound", params, data=b"Body=%FF%FE&From=x")
    assert not_utf8.status == 400
    raw_not_utf8 = await running.post("/sms/inbound", params, data=b"Body=\xff")
    assert raw_not_utf8.status == 400
    malformed = await running.post("/sms/inbound", params, data=b"Body&&=&x")
    assert malformed.status == 400
    too_large = await running.post("/sms/inbound", params, data=b"Body=" + b"x" * 4096)
    assert too_large.status == 413
    missing = {"Body": "no sid, no numbers"}
    assert (await running.post("/sms/inbound", missing)).status == 400
    assert (await running.post("/sms/inbound", dict(params, NumMedia="many"))).status == 400
    assert (await running.post("/sms/status", {"MessageSid": new_sid()})).status == 400

    stats = running.sms.stats()
    assert stats["rejected_method"] == 1
    assert stats["rejected_form"] == 4
    assert stats["rejected_too_large"] == 1
    assert stats["rejected_fields"] == 3
    assert running.gateway.stats.events_sent == 0 and seen == []
    # Still serving.
    assert (await running.post("/sms/inbound", params)).status == 200


async def test_websocket_to_a_webhook_path_is_refused(stack: Any) -> None:
    running = await stack(recording_app([]))
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await session.ws_connect(f"http://127.0.0.1:{running.port}/sms/inbound")
    assert caught.value.status == 403


@pytest.mark.parametrize(
    "layer_config", [{"BACKEND": "memory", "CONFIG": {"block_timeout": 0.05, "channel_capacity": {"switchboard.sms": 1}}}]
)
async def test_full_worker_pool_is_503_and_its_retry_is_not_a_duplicate(stack: Any, layer: ChannelLayer) -> None:
    running = await stack(None, reply_deadline=0.2)  # no worker: the pool channel fills up
    first = await running.post("/sms/inbound", inbound_params("fills the channel"))
    assert (first.status, first.text) == (200, EMPTY_TWIML)
    params = inbound_params("no room")
    for _ in range(2):  # the retry of a refused webhook is refused again, not dropped as a duplicate
        answer = await running.post("/sms/inbound", params)
        assert (answer.status, answer.headers.get("Retry-After")) == (503, "1")
    stats = running.sms.stats()
    assert stats["events_full"] == 2 and "duplicates" not in stats


# -- de-duplication, status callbacks ---------------------------------------------------


async def test_duplicate_message_sid_is_delivered_once(stack: Any) -> None:
    seen: list[tuple[dict[str, Any], Message]] = []
    running = await stack(recording_app(seen, lambda event: {"type": "sms.reply", "body": "once"}))
    params = inbound_params("twice", sid=new_sid())

    first = await running.post("/sms/inbound", params)
    again = await running.post("/sms/inbound", params)

    assert "<Message>once</Message>" in first.text
    assert (again.status, again.text) == (200, EMPTY_TWIML)
    assert len(seen) == 1
    assert running.sms.stats()["duplicates"] == 1
    # Another message is delivered as usual.
    assert "<Message>once</Message>" in (await running.post("/sms/inbound", inbound_params("new"))).text
    assert len(seen) == 2


async def test_seen_sids_are_markers_on_the_layer(stack: Any, layer: ChannelLayer) -> None:
    """The memory of SIDs is the layer's, not the plugin's: what a restarted gateway (or
    another one on the same Redis) consults. Odd SIDs get a hashed key, still de-duplicated."""
    seen: list[tuple[dict[str, Any], Message]] = []
    running = await stack(recording_app(seen, lambda event: {"type": "sms.reply"}))
    plain, odd = new_sid(), "SM with spaces, ünïcode " + "x" * 300
    for sid in (plain, odd, plain, odd):
        assert (await running.post("/sms/inbound", inbound_params("hi", sid=sid))).status == 200
    assert [event["message_sid"] for _scope, event in seen] == [plain, odd]
    assert running.sms.stats()["duplicates"] == 2
    assert await layer.mark(f"sms:{plain}:", 60) is False  # set by the plugin


async def test_dedupe_can_be_turned_off(stack: Any) -> None:
    seen: list[tuple[dict[str, Any], Message]] = []
    running = await stack(recording_app(seen, lambda event: {"type": "sms.reply"}), dedupe_ttl=0)
    params = inbound_params("twice", sid=new_sid())
    for _ in range(2):
        assert (await running.post("/sms/inbound", params)).status == 200
    assert len(seen) == 2


async def test_status_callbacks_reach_the_worker_once_per_status(stack: Any) -> None:
    seen: list[tuple[dict[str, Any], Message]] = []
    running = await stack(recording_app(seen))
    sid = new_sid()

    for status, extra in (("sent", {}), ("sent", {}), ("undelivered", {"ErrorCode": "30003"})):
        answer = await running.post("/sms/status", status_params(sid, status, **extra))
        assert (answer.status, answer.text) == (204, "")

    await wait_until(lambda: len(seen) == 2, what="two status events")
    (scope1, sent), (_scope2, undelivered) = sorted(seen, key=lambda item: item[1]["status"] != "sent")
    for scope, event in seen:
        check_against_spec(scope, event)
    assert scope1["path"] == "/sms/status"
    assert (sent["type"], sent["message_sid"], sent["status"], sent["error_code"]) == ("sms.status", sid, "sent", None)
    assert (sent["to"], sent["from"]) == (SENDER, TWILIO_NUMBER)
    assert (undelivered["status"], undelivered["error_code"]) == ("undelivered", 30003)
    stats = running.sms.stats()
    assert stats["statuses"] == 2 and stats["duplicates"] == 1


# -- deferred sends -----------------------------------------------------------------------


async def test_deferred_send_reaches_the_api_with_the_right_form_fields(stack: Any, api: TwilioApiStub) -> None:
    running = await stack(None, account_sid=ACCOUNT_SID, api_base_url=api.url)
    await running.layer.send(OUTBOUND_CHANNEL, {
        "type": "sms.send", "to": SENDER, "from": TWILIO_NUMBER, "body": "hello later",
        "media": ["https://example.com/1.png", "https://example.com/2.png"],
        "status_callback": "https://cb.example.test/s",
    })
    (request,) = await api.wait_for(1)
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request.auth == (ACCOUNT_SID, AUTH_TOKEN)
    assert request.form == {
        "To": [SENDER], "From": [TWILIO_NUMBER], "Body": ["hello later"],
        "MediaUrl": ["https://example.com/1.png", "https://example.com/2.png"],
        "StatusCallback": ["https://cb.example.test/s"],
    }
    await wait_until(lambda: running.sms.stats().get("messages_out") == 1, what="sent counted")


async def test_messaging_service_default_status_callback_and_api_key(stack: Any, api: TwilioApiStub) -> None:
    running = await stack(None, account_sid=ACCOUNT_SID, api_base_url=api.url, default_status_callback=True,
                          api_key_sid="SK" + "1" * 32, api_key_secret="key-secret")
    await running.layer.send(OUTBOUND_CHANNEL, {"type": "sms.send", "to": SENDER, "messaging_service_sid": "MG1",
                                                "media": ["https://example.com/m.jpg"]})
    (request,) = await api.wait_for(1)
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request.auth == ("SK" + "1" * 32, "key-secret")
    assert request.form == {
        "To": [SENDER], "MessagingServiceSid": ["MG1"], "MediaUrl": ["https://example.com/m.jpg"],
        "StatusCallback": [PUBLIC_BASE_URL + "/sms/status"],
    }


async def test_bad_sends_and_api_errors_are_counted_logged_without_secrets(
    stack: Any, api: TwilioApiStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    running = await stack(None, account_sid=ACCOUNT_SID, api_base_url=api.url, default_from=TWILIO_NUMBER)
    bad = [
        {"type": "sms.send", "body": "no recipient"},
        {"type": "sms.send", "to": SENDER, "from": None, "messaging_service_sid": None},  # no content
        {"type": "sms.send", "to": SENDER, "body": "x" * 1601},
        {"type": "sms.send", "to": SENDER, "body": "x", "media": ["not a url"]},
        {"type": "sms.send", "to": SENDER, "body": "x", "media": [f"https://e.test/{i}" for i in range(11)]},
        {"type": "sms.send", "to": SENDER, "body": b"bytes"},
        {"type": "sms.reply", "body": "not a send"},
        {"type": "sms.send", "to": "", "body": "empty recipient"},
    ]
    for message in bad:
        await running.layer.send(OUTBOUND_CHANNEL, message)
    await running.layer.send(OUTBOUND_CHANNEL, {"type": "sms.send", "to": "+15550000400", "body": "refused by the API"})
    await running.layer.send(OUTBOUND_CHANNEL, {"type": "sms.send", "to": SENDER, "body": "fine"})

    await wait_until(lambda: running.sms.stats().get("messages_out") == 1 and running.sms.stats().get("send_failed") == 1,
                     what="the good send and the refused one")
    stats = running.sms.stats()
    assert stats["replies_invalid"] == len(bad)
    assert stats["send_received"] == len(bad) + 2
    requests = api.snapshot()
    assert sorted(r.field("Body") for r in requests) == ["fine", "refused by the API"]
    assert all(r.field("From") == TWILIO_NUMBER for r in requests)  # default_from
    assert "21211" in caplog.text
    assert AUTH_TOKEN not in caplog.text


async def test_unreachable_api_is_counted(stack: Any) -> None:
    from .conftest import free_tcp_port

    running = await stack(None, account_sid=ACCOUNT_SID, api_base_url=f"http://127.0.0.1:{free_tcp_port()}")
    await running.layer.send(OUTBOUND_CHANNEL, {"type": "sms.send", "to": SENDER, "from": TWILIO_NUMBER, "body": "x"})
    await wait_until(lambda: running.sms.stats().get("send_errors") == 1, what="send error counted")


async def test_without_account_sid_the_gateway_does_not_take_sends(stack: Any, api: TwilioApiStub) -> None:
    running = await stack(None, api_base_url=api.url)
    assert running.sms.sender is None
    await running.layer.send(OUTBOUND_CHANNEL, {"type": "sms.send", "to": SENDER, "from": TWILIO_NUMBER, "body": "x"})
    # Left on the channel for a gateway that can send it.
    assert await asyncio.wait_for(running.layer.receive(OUTBOUND_CHANNEL), 2) == {
        "type": "sms.send", "to": SENDER, "from": TWILIO_NUMBER, "body": "x"}
    assert api.snapshot() == []


async def test_sms_send_to_a_webhook_reply_channel_is_dropped(stack: Any, api: TwilioApiStub) -> None:
    running = await stack(
        recording_app([], lambda event: {"type": "sms.send", "to": event["from"], "body": "wrong way"}),
        account_sid=ACCOUNT_SID, api_base_url=api.url, reply_deadline=0.3,
    )
    answer = await running.post("/sms/inbound", inbound_params("x"))
    assert (answer.status, answer.text) == (200, EMPTY_TWIML)
    assert running.sms.stats()["send_dropped_wrong_channel"] == 1
    assert api.snapshot() == []


# -- options and lifecycle --------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({"auth_token": ""}, "auth_token"),
        ({"public_base_url": "sms.example.com"}, "public_base_url"),
        ({"public_base_url": "https://x.test/?a=1"}, "public_base_url"),
        ({"reply_deadline": 15}, "reply_deadline"),
        ({"reply_deadline": 0}, "reply_deadline"),
        ({"inbound_path": "sms"}, "inbound_path"),
        ({"status_path": "/sms/inbound"}, "differ"),
        ({"api_key_sid": "SK1"}, "api_key"),
        ({"api_key_sid": "SK1", "api_key_secret": "s"}, "account_sid"),
        ({"dedupe_ttl": -1}, "dedupe_ttl"),
        ({"max_body_size": 0}, "max_body_size"),
        ({"api_base_url": "ftp://x"}, "api_base_url"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_options_stop_start_up(raw: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        sms_options(**raw)


def test_auth_token_is_required_and_never_in_repr() -> None:
    from switchboard.gateway.config import parse_options
    from switchboard.protocols.sms import SmsOptions

    with pytest.raises(ConfigError, match="auth_token"):
        parse_options(SmsOptions, {"public_base_url": PUBLIC_BASE_URL}, where="PROTOCOLS.sms")
    options = sms_options(account_sid=ACCOUNT_SID, api_key_sid="SK1", api_key_secret="key-secret")
    assert AUTH_TOKEN not in repr(options) and "key-secret" not in repr(options)
    assert options.public_base_url == PUBLIC_BASE_URL


async def test_plugin_is_found_by_name_and_a_stopped_plugin_answers_503(stack: Any) -> None:
    from switchboard.gateway.plugins import load_plugin_class

    assert load_plugin_class("sms") is SmsPlugin
    running = await stack(recording_app([], lambda event: {"type": "sms.reply", "body": "back"}))
    assert running.gateway.find_mount("/sms/inbound") is not None
    assert running.gateway.find_mount("/sms/status") is not None
    await running.sms.stop(1.0)
    await running.sms.stop(1.0)  # idempotent
    # Still mounted while the HTTP plugin drains: Twilio gets 503, the workers get nothing.
    answer = await running.post("/sms/inbound", inbound_params("x"))
    assert answer.status == 503
    assert running.gateway.stats.events_sent == 0
    # A new start on the same gateway takes the endpoints over.
    await running.sms.start(running.gateway)
    assert "<Message>back</Message>" in (await running.post("/sms/inbound", inbound_params("y"))).text


async def test_stop_lets_open_webhooks_finish_and_refuses_new_ones(stack: Any) -> None:
    release = asyncio.Event()

    async def slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await release.wait()
        await send({"type": "sms.reply", "body": "made it"})

    running = await stack(slow_app, reply_deadline=10)
    in_flight = asyncio.create_task(running.post("/sms/inbound", inbound_params("slow")))
    await wait_until(lambda: running.sms.active == 1, what="the webhook in flight")
    stopping = asyncio.create_task(running.sms.stop(10))
    await wait_until(lambda: running.sms.stopping, what="the plugin stopping")

    refused = await running.post("/sms/inbound", inbound_params("too late"))
    assert (refused.status, refused.headers.get("Retry-After")) == (503, "1")
    assert not stopping.done()
    release.set()
    assert "<Message>made it</Message>" in (await in_flight).text
    await stopping
    assert running.sms.stats()["rejected_stopping"] == 1
