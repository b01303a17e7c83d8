"""Fuzz: Twilio webhook bodies — random forms, with and without a valid signature.

Why: the webhook endpoints are public URLs; anyone can POST anything to them. specs/sms.md
orders the checks (method, size, form, signature, fields) and names the answer of each
(405, 413, 400, 403, 400), so for every generated request the expected status is
computed from the same rules and compared; only a validly signed webhook may reach a
consumer, whose inline reply must come back as TwiML.
"""

from __future__ import annotations

import http.client
import itertools
from urllib.parse import parse_qsl, urlencode

from hypothesis import given
from hypothesis import strategies as st
from rel_fuzz import assert_no_reply_channel, end_batch, fuzz_settings
from rel_harness import (
    SMS_AUTH_TOKEN,
    SMS_INBOUND_PATH,
    SMS_MAX_BODY,
    SMS_PUBLIC_BASE_URL,
    SMS_STATUS_PATH,
    FuzzLedger,
    FuzzTarget,
)
from support.waiting import deadline
from twilio.request_validator import RequestValidator

FORM = "application/x-www-form-urlencoded"
_sids = itertools.count()
_FIELD = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)


@st.composite
def webhook(draw: st.DrawFn) -> dict[str, object]:
    """A request: path, method, content type, body, and how (or whether) it is signed."""
    path = draw(st.sampled_from([SMS_INBOUND_PATH, SMS_STATUS_PATH]))
    fields = draw(st.dictionaries(_FIELD, _FIELD, max_size=8))
    if draw(st.booleans()):
        required = ["MessageSid", "From", "To"] if path == SMS_INBOUND_PATH else ["MessageSid", "MessageStatus"]
        for name in draw(st.lists(st.sampled_from(required), unique=True)):
            fields[name] = draw(_FIELD)
        if draw(st.booleans()):
            fields["NumMedia"] = draw(st.sampled_from(["0", "2", "x", "-1", "99999999999"]))
    body_kind = draw(st.sampled_from(["form", "form", "form", "raw bytes", "too large"]))
    if body_kind == "form":
        body = urlencode(fields).encode()
    elif body_kind == "raw bytes":
        body = draw(st.binary(max_size=300))
    else:
        body = urlencode({"Body": "x" * (SMS_MAX_BODY + draw(st.integers(1, 1000)))}).encode()
    return {
        "path": path,
        "method": draw(st.sampled_from(["POST"] * 8 + ["GET", "PUT"])),
        "content_type": draw(st.sampled_from([FORM] * 6 + [FORM + "; charset=utf-8", "text/plain", "application/json", ""])),
        "body": body,
        "fields": fields,
        "signing": draw(st.sampled_from(["valid", "valid", "none", "random", "other token"])),
        "random_signature": draw(st.text("ABCDEFabcdef0123456789+/=", min_size=1, max_size=40)),
    }


def expected_status(request: dict[str, object], signature: str | None) -> tuple[int, str]:
    """specs/sms.md "Outcomes", in the order the checks run: the status and why."""
    body = request["body"]
    assert isinstance(body, bytes)
    if request["method"] != "POST":
        return 405, "method not POST"
    if len(body) > SMS_MAX_BODY:
        return 413, "body over max_body_size"
    if str(request["content_type"]).split(";")[0].strip() != FORM:
        return 400, "not a urlencoded form"
    try:
        text = body.decode("utf-8")
        form = dict(parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict"))
    except (UnicodeDecodeError, ValueError):
        return 400, "malformed form"
    url = SMS_PUBLIC_BASE_URL + str(request["path"])
    if not signature:
        return 403, "no signature"
    if not RequestValidator(SMS_AUTH_TOKEN).validate(url, form, signature):
        return 403, "wrong signature"
    if request["path"] == SMS_INBOUND_PATH:
        if not form.get("MessageSid") or "From" not in form or "To" not in form:
            return 400, "signed, required fields missing"
        if not _int(form.get("NumMedia") or "0"):
            return 400, "signed, NumMedia not a number"
        return 200, "signed incoming message"
    if not form.get("MessageSid") or not form.get("MessageStatus"):
        return 400, "signed, required fields missing"
    return 204, "signed status callback"


def _int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def test_random_webhooks_get_their_status_and_only_signed_ones_reach_a_consumer(
    fuzz_target: FuzzTarget, fuzz_ledger: FuzzLedger
) -> None:
    """403 without a valid signature, 400/405/413 for bad requests, TwiML for the rest."""
    fuzz_target.begin()

    @fuzz_settings(250)
    @given(request=webhook())
    def one(request: dict[str, object]) -> None:
        fields = dict(request["fields"])  # type: ignore[call-overload]
        if "MessageSid" in fields and request["body"] == urlencode(request["fields"]).encode():  # type: ignore[arg-type]
            # A fresh sid each time: a repeated one is (rightly) answered as a duplicate.
            fields["MessageSid"] = f"SM{next(_sids):032d}{fields['MessageSid']}"
            request["body"] = urlencode(fields).encode()
        url = SMS_PUBLIC_BASE_URL + str(request["path"])
        signing = request["signing"]
        signature = {
            "valid": RequestValidator(SMS_AUTH_TOKEN).compute_signature(url, fields),
            "other token": RequestValidator("not-the-token").compute_signature(url, fields),
            "random": str(request["random_signature"]),
            "none": None,
        }[str(signing)]
        expected, why = expected_status(request, signature)
        headers = {"Content-Type": str(request["content_type"])} if request["content_type"] else {}
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        connection = http.client.HTTPConnection("127.0.0.1", fuzz_target.http_port, timeout=deadline(10))
        try:
            connection.request(str(request["method"]), str(request["path"]), body=request["body"], headers=headers)  # type: ignore[arg-type]
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        fuzz_ledger.record("sms", fuzz_target.name, f"{why}: {response.status}")
        assert_no_reply_channel(body, "a webhook answer")
        assert response.status == expected, f"{request!r} signed {signing}: expected {expected}, got {response.status} {body!r}"
        if expected == 200:
            assert body.startswith(b"<?xml") and b"<Message>got " in body, body

    one()
    end_batch(fuzz_target, fuzz_ledger)
