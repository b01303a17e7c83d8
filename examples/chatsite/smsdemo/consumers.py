"""An SMS auto-responder on Twilio webhooks.

Point a Twilio number's "A message comes in" webhook at
``<public_base_url>/sms/inbound`` (HTTP POST) and text it:

- ``hours``            -> an inline reply (TwiML, answered while Twilio's webhook waits);
- ``later <anything>`` -> a deferred message, sent afterwards through the REST API (the
  way to answer after slow work: the webhook is long answered by then);
- ``stop`` / ``unstop`` and friends -> no reply (Twilio handles opt-outs itself);
- anything else        -> an inline acknowledgement.

Status callbacks of the deferred messages arrive as ``status_received`` calls.
"""

from __future__ import annotations

import logging

from showcase.feed import publish

from switchboard.consumers.sms import IncomingSms, SmsConsumer, SmsStatus

logger = logging.getLogger("smsdemo")

# Twilio answers these keywords itself (Advanced Opt-Out); a reply would be noise.
OPT_OUT_KEYWORDS = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "start", "unstop", "yes", "help"})


class AutoResponderConsumer(SmsConsumer):
    """Answers every text; stateless, as SMS consumers must be (one webhook, one instance)."""

    async def message_received(self, sms: IncomingSms) -> None:
        text = sms.body.strip()
        await publish(self.channel_layer, "sms", f"{sms.from_}: {text}")
        keyword = text.lower()
        if keyword in OPT_OUT_KEYWORDS:
            return  # answered "no reply" at once by SmsConsumer
        if keyword == "hours":
            await self.reply("We're open 9:00-17:00, Monday to Friday.")
        elif keyword.startswith("later"):
            await self.reply()  # nothing inline: Twilio is answered now ...
            # ... and the real answer goes out through the REST API, from the number
            # that was texted, whenever it is ready.
            await self.send_sms(sms.from_, f"As promised, later: {text[5:].strip() or 'hello again'}", from_=sms.to)
        else:
            media = f" and {len(sms.media)} attachment(s)" if sms.media else ""
            await self.reply(f"Thanks! We got your message{media}: {text[:100]!r}")

    async def status_received(self, status: SmsStatus) -> None:
        logger.info("message %s is now %s (error %s)", status.message_sid, status.status, status.error_code)
