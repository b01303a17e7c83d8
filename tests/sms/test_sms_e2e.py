"""SMS end to end: real OS processes, real signed webhooks, a Twilio API stand-in.

Every test runs twice: ``split`` (``switchboard gateway`` + ``switchboard worker`` over the
real Redis) and ``run`` (one ``switchboard run`` process on the in-memory layer). The
worker runs the example's auto-responder (``examples/chatsite/smsdemo``).
"""

from __future__ import annotations

import pytest

from .conftest import SENDER, TWILIO_NUMBER, Deployment, TwilioApiStub, inbound_params, new_sid, sign, status_params

pytestmark = pytest.mark.e2e

REPORT_TO = "+15550009999"  # where sms_routing.py reports status callbacks

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'


async def test_inline_reply_and_deferred_send(deployment: Deployment, api: TwilioApiStub) -> None:
    await deployment.wait_ready()

    answer = await deployment.post("/sms/inbound", inbound_params("hours"))
    assert answer.status == 200
    assert "<Message>We're open 9:00-17:00, Monday to Friday.</Message>" in answer.text

    answer = await deployment.post("/sms/inbound", inbound_params("later pick up milk"))
    assert (answer.status, answer.text) == (200, EMPTY_TWIML)
    request = await api.wait_for_body(lambda body: body.startswith("As promised"), timeout=10)
    assert request.field("Body") == "As promised, later: pick up milk"
    assert (request.field("To"), request.field("From")) == (SENDER, TWILIO_NUMBER)

    answer = await deployment.post("/sms/inbound", inbound_params("stop"))
    assert (answer.status, answer.text) == (200, EMPTY_TWIML)


async def test_bad_signatures_are_refused_and_the_gateway_keeps_serving(deployment: Deployment) -> None:
    await deployment.wait_ready()
    params = inbound_params("hours")
    assert (await deployment.post("/sms/inbound", params, signature=None)).status == 403
    assert (await deployment.post("/sms/inbound", params, signature=sign("/sms/inbound", params, token="x"))).status == 403
    assert (await deployment.post("/sms/inbound", params, method="GET")).status == 405
    assert (await deployment.post("/sms/inbound", params, data=b"\xff\xfe")).status == 400
    answer = await deployment.post("/sms/inbound", params)
    assert answer.status == 200 and "open" in answer.text


async def test_duplicates_are_delivered_once_and_statuses_reach_the_consumer(
    deployment: Deployment, api: TwilioApiStub
) -> None:
    await deployment.wait_ready()
    duplicate = inbound_params("later dup", sid=new_sid())
    for _ in range(3):
        assert (await deployment.post("/sms/inbound", duplicate)).status == 200
    sid = new_sid()
    assert (await deployment.post("/sms/status", status_params(sid, "delivered"))).status == 204
    assert (await deployment.post("/sms/status", status_params(sid, "delivered"))).status == 204

    # The status report is queued after every duplicate was answered; once it has come
    # through the API, anything a duplicate caused would have been sent too.
    await api.wait_for_body(lambda body: body == f"status {sid} delivered", timeout=10)
    marker = await deployment.post("/sms/inbound", inbound_params("later marker"))
    assert marker.status == 200
    await api.wait_for_body(lambda body: body == "As promised, later: marker", timeout=10)

    bodies = api.bodies()
    assert bodies.count("As promised, later: dup") == 1
    assert bodies.count(f"status {sid} delivered") == 1
    reports = [r for r in api.snapshot() if r.field("To") == REPORT_TO]
    assert len(reports) == 1
