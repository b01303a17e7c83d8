"""The SMS baseline's one view: what a hand-written Django Twilio webhook does.

It checks ``X-Twilio-Signature`` with twilio's ``RequestValidator`` against the same public
URL and answers the same TwiML (twilio's ``MessagingResponse``) as the ``sms`` plugin and
its consumer, so both sides do the same Twilio work and the difference is the path a
webhook takes (gateway, layer, worker) and the plugin's policy (de-duplication, limits).
An ``async def`` view, like the async consumer on the other side: no thread hop.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseNotAllowed
from django.urls import path
from plugins_site.common import SMS_AUTH_TOKEN, SMS_INBOUND_PATH, SMS_PUBLIC_BASE_URL, SMS_REPLY_PREFIX
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

VALIDATOR = RequestValidator(SMS_AUTH_TOKEN)


async def inbound(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    signature = request.headers.get("X-Twilio-Signature", "")
    if not VALIDATOR.validate(SMS_PUBLIC_BASE_URL + request.get_full_path(), request.POST, signature):
        return HttpResponseForbidden("bad or missing X-Twilio-Signature\n")
    response = MessagingResponse()
    response.message(SMS_REPLY_PREFIX + request.POST.get("Body", ""))
    twiml = str(response).encode()
    answer = HttpResponse(twiml, content_type="application/xml; charset=utf-8")
    answer["Content-Length"] = str(len(twiml))  # as the plugin sends it (Django alone would chunk)
    return answer


urlpatterns = [path(SMS_INBOUND_PATH.lstrip("/"), inbound)]
