"""Constants the servers and the load generators of the plugin benchmarks share."""

from __future__ import annotations

#: Twilio Auth Token of the SMS benchmark: webhooks are signed with it (not a secret).
SMS_AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
#: What "Twilio" is configured with; signatures are checked against it + the path.
SMS_PUBLIC_BASE_URL = "https://sms.bench.test"
SMS_INBOUND_PATH = "/sms/inbound"
#: The inline reply is this prefix + the incoming Body.
SMS_REPLY_PREFIX = "echo: "
SMS_ACCOUNT_SID = "AC" + "0" * 32
SMS_TO = "+15551230000"
SMS_FROM = "+15557654321"

#: Offers are POSTed here (Switchboard: the webrtc plugin's mount + the route of the echo
#: consumer; bare: the tiny aiohttp signaling endpoint serves any path).
WEBRTC_OFFER_PATH = "/webrtc/offer/echo/"
WEBRTC_LABEL = "bench"


def patch_loopback_ice() -> None:
    """Gather ICE host candidates on 127.0.0.1 only (aioice leaves loopback out).

    The Switchboard side does the same through its ``ice_host_addresses`` option.
    """
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []  # type: ignore[assignment]


def mqtt_request_topic(prefix: str, slot: int | str) -> str:
    return f"{prefix}/req/{slot}"


def mqtt_reply_topic(prefix: str, slot: int | str) -> str:
    return f"{prefix}/resp/{slot}"
