"""Replayed webhooks after a gateway restart, and across gateways: delivered once.

A signed Twilio webhook carries no timestamp, so whoever captured one can send it again.
The gateways remember each ``MessageSid`` as a marker on the channel layer (Redis
``SET NX`` with a TTL): a restarted gateway, and any other gateway on the same Redis,
refuses the replay. Split mode only: the in-memory layer of ``switchboard run`` lives and
dies with its one process (docs/sms.md says so).

What reached the consumer is read where a deployment would see it: the example's
auto-responder turns ``later <text>`` into a deferred send, which the gateway delivers to
the Twilio API stand-in, so every delivered copy of a message is one API request.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from support.processes import free_tcp_port
from support.waiting import wait_until

from .conftest import Deployment, TwilioApiStub, inbound_params, new_sid, post_webhook, status_params

pytestmark = pytest.mark.e2e

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'


async def settle(deployment: Deployment, api: TwilioApiStub, port: int, label: str) -> None:
    """Wait until everything posted before now has been handled: a fresh message's send arrived.

    Sends are handled in order per channel, and the worker answers a message before the
    next: once a later message's deferred send reached the API, a duplicate posted earlier
    would have reached it too.
    """
    answer = await post_webhook(port, "/sms/inbound", inbound_params(f"later {label}"))
    assert (answer.status, answer.text) == (200, EMPTY_TWIML)
    await api.wait_for_body(lambda body: body == f"As promised, later: {label}", timeout=20)


async def serving(port: int) -> bool:
    """Whether a gateway on ``port`` serves webhooks yet (a fresh message gets its TwiML)."""
    try:
        reply = await post_webhook(port, "/sms/inbound", inbound_params("hours"))
    except aiohttp.ClientError:
        return False
    return reply.status == 200 and "open" in reply.text


@pytest.mark.parametrize("deployment", ["split"], indirect=True)
async def test_replay_after_restart_and_on_another_gateway_is_delivered_once(
    deployment: Deployment, api: TwilioApiStub
) -> None:
    await deployment.wait_ready()
    captured = inbound_params("later replayed", sid=new_sid())
    status = status_params(new_sid(), "delivered")
    assert (await deployment.post("/sms/inbound", captured)).status == 200
    assert (await deployment.post("/sms/status", status)).status == 204
    await api.wait_for_body(lambda body: body == "As promised, later: replayed", timeout=20)

    # The gateway restarts (a deploy): its process memory is gone, the markers are not.
    assert deployment.stop("gateway") == 0
    deployment.start("gateway", "gateway")
    await deployment.wait_ready()
    replay = await deployment.post("/sms/inbound", captured)
    assert (replay.status, replay.text) == (200, EMPTY_TWIML)
    assert (await deployment.post("/sms/status", status)).status == 204

    # A second gateway on the same Redis: the replay is refused there too, and a new
    # message posted to both gateways at once goes through exactly one of them.
    second_port = free_tcp_port()
    deployment.start("gateway2", "gateway", env={"SMS_TEST_HTTP_BIND": f"127.0.0.1:{second_port}"})
    await wait_until(lambda: serving(second_port), timeout=30, what="the second gateway", interval=0.2)
    replay = await post_webhook(second_port, "/sms/inbound", captured)
    assert (replay.status, replay.text) == (200, EMPTY_TWIML)
    both = inbound_params("later raced", sid=new_sid())
    answers = await asyncio.gather(
        deployment.post("/sms/inbound", both), post_webhook(second_port, "/sms/inbound", both)
    )
    assert [answer.status for answer in answers] == [200, 200]

    await settle(deployment, api, deployment.port, "done")
    await settle(deployment, api, second_port, "done too")
    bodies = api.bodies()
    assert bodies.count("As promised, later: replayed") == 1
    assert bodies.count("As promised, later: raced") == 1
    assert bodies.count(f"status {status['MessageSid']} delivered") == 1
    for name in ("gateway", "gateway2"):
        assert "Traceback" not in deployment.log(name)
