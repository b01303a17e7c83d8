"""Routing for the SMS end-to-end tests: the example's auto-responder, plus a status probe.

Status callbacks are made visible to the test through the same path a real deployment
uses for deferred sends: the consumer reports each one as an ``sms.send`` that the
gateway delivers to the Twilio API stand-in.
"""

from __future__ import annotations

from smsdemo.consumers import AutoResponderConsumer

from switchboard.consumers import ProtocolTypeRouter
from switchboard.consumers.sms import SmsStatus

REPORT_TO = "+15550009999"


class ReportingAutoResponder(AutoResponderConsumer):
    async def status_received(self, status: SmsStatus) -> None:
        await super().status_received(status)
        await self.send_sms(REPORT_TO, f"status {status.message_sid} {status.status}", from_="+15551230000")


application = ProtocolTypeRouter({"sms": ReportingAutoResponder.as_asgi()})
