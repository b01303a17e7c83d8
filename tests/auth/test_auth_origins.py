"""OriginValidator and AllowedHostsOriginValidator: matching rules and refusals per protocol."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test.utils import override_settings

from switchboard.consumers import (
    AllowedHostsOriginValidator,
    AsyncWebsocketConsumer,
    AuthMiddlewareStack,
    OriginValidator,
    ProtocolTypeRouter,
    URLRouter,
)
from switchboard.consumers.security import DENIED_BODY


class Recorder:
    """An inner app that records whether it was reached."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1


def origin(value: bytes | None) -> list[tuple[bytes, bytes]]:
    return [] if value is None else [(b"origin", value)]


ALLOWED = ["chat.example.com", ".example.org", "https://secure.example.net", "http://dev.example.net:8000", "[::1]"]


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        (b"http://chat.example.com", True),
        (b"https://chat.example.com:8443", True),  # no scheme in the pattern: any scheme and port
        (b"HTTPS://Chat.Example.COM", True),  # origins are case-insensitive
        (b"https://example.org", True),  # ".example.org": the domain ...
        (b"https://deep.sub.example.org", True),  # ... and its subdomains
        (b"https://evil-example.org", False),
        (b"https://example.org.evil.com", False),
        (b"https://secure.example.net", True),
        (b"https://secure.example.net:443", True),  # default port filled in
        (b"http://secure.example.net", False),  # scheme must match
        (b"https://secure.example.net:444", False),  # port must match
        (b"http://dev.example.net:8000", True),
        (b"http://dev.example.net", False),
        (b"http://[::1]:8000", True),
        (b"http://evil.com", False),
        (b"null", False),
        (b"chat.example.com", False),  # not an origin: no scheme
        (b"http://chat.example.com:99999", False),  # bad port
        (b"http://[::1", False),  # unparsable
        (b"http://chat.example.com\xff", False),  # not ASCII
        (b"", False),
    ],
)
async def test_websocket_origin_matching(value: bytes, allowed: bool, scope: Any) -> None:
    inner = Recorder()
    validator = OriginValidator(inner, ALLOWED)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await validator(scope(headers=origin(value)), receive, send)
    assert inner.calls == (1 if allowed else 0)
    assert bool(sent) is not allowed


def test_regex_patterns_match_the_whole_origin() -> None:
    from urllib.parse import ParseResult

    from switchboard.consumers.security import match_origin, parse_origin

    def parsed(value: bytes) -> ParseResult:
        result = parse_origin({"headers": [[b"origin", value]]})
        assert isinstance(result, ParseResult)
        return result

    pattern = re.compile(r"https://[a-z]+\.preview\.example\.com")
    assert match_origin(parsed(b"https://pr.preview.example.com"), pattern)
    assert not match_origin(parsed(b"https://pr42.preview.example.com"), pattern)
    assert not match_origin(parsed(b"https://pr.preview.example.com.evil.test"), pattern)


async def test_star_allows_anything_even_no_origin(scope: Any) -> None:
    inner = Recorder()
    validator = OriginValidator(inner, ["*"])
    await validator(scope(headers=origin(None)), None, None)
    await validator(scope(headers=origin(b"https://anywhere.test")), None, None)
    assert inner.calls == 2


class Feed:
    """Feeds a fixed list of messages to ``receive`` and records what is sent."""

    def __init__(self, *messages: dict[str, Any]) -> None:
        self.messages = list(messages)
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return self.messages.pop(0)

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


async def test_websocket_without_origin_is_refused_with_a_403_denial_response(scope: Any) -> None:
    feed = Feed({"type": "websocket.connect"})
    inner = Recorder()
    ws = scope(headers=[(b"host", b"chat.example.com")], extensions={"websocket.http.response": {}})
    await OriginValidator(inner, ALLOWED)(ws, feed.receive, feed.send)
    assert inner.calls == 0
    start, body = feed.sent
    assert start["type"] == "websocket.http.response.start" and start["status"] == 403
    assert body == {"type": "websocket.http.response.body", "body": DENIED_BODY}


async def test_websocket_refused_with_close_4403_without_the_denial_extension(scope: Any) -> None:
    feed = Feed({"type": "websocket.connect"})
    await OriginValidator(Recorder(), ALLOWED)(scope(headers=origin(b"https://evil.test")), feed.receive, feed.send)
    assert feed.sent == [{"type": "websocket.close", "code": 4403}]


async def test_resumed_websocket_is_closed_not_denied(scope: Any) -> None:
    # After a deploy the socket is long open: a denial response could not reach it.
    feed = Feed({"type": "websocket.connect"})
    ws = scope(headers=origin(b"https://evil.test"), extensions={"websocket.http.response": {}}, resumed=True)
    await OriginValidator(Recorder(), ALLOWED)(ws, feed.receive, feed.send)
    assert feed.sent == [{"type": "websocket.close", "code": 4403}]


async def test_websocket_gone_before_connect_sends_nothing(scope: Any) -> None:
    feed = Feed({"type": "websocket.disconnect", "code": 1006})
    await OriginValidator(Recorder(), ALLOWED)(scope(headers=origin(b"https://evil.test")), feed.receive, feed.send)
    assert feed.sent == []


async def test_several_origin_headers_are_refused(scope: Any) -> None:
    feed = Feed({"type": "websocket.connect"})
    headers = [(b"origin", b"https://chat.example.com"), (b"origin", b"https://evil.test")]
    await OriginValidator(Recorder(), ALLOWED)(scope(headers=headers), feed.receive, feed.send)
    assert feed.sent == [{"type": "websocket.close", "code": 4403}]


async def test_http_cross_site_gets_403_after_the_body(scope: Any) -> None:
    feed = Feed(
        {"type": "http.request", "body": b"part", "more_body": True},
        {"type": "http.request", "body": b"rest", "more_body": False},
    )
    inner = Recorder()
    await OriginValidator(inner, ALLOWED)(scope("http", "/api/", headers=origin(b"https://evil.test")), feed.receive, feed.send)
    assert inner.calls == 0
    start, body = feed.sent
    assert start["status"] == 403 and [b"content-length", str(len(DENIED_BODY)).encode()] in start["headers"]
    assert body == {"type": "http.response.body", "body": DENIED_BODY, "more_body": False}


async def test_http_without_origin_is_a_same_origin_or_non_browser_request(scope: Any) -> None:
    inner = Recorder()
    await OriginValidator(inner, ALLOWED)(scope("http", "/events/lobby/"), None, None)
    assert inner.calls == 1


async def test_http_client_gone_before_the_refusal(scope: Any) -> None:
    feed = Feed({"type": "http.disconnect"})
    await OriginValidator(Recorder(), ALLOWED)(scope("http", headers=origin(b"null")), feed.receive, feed.send)
    assert feed.sent == []


async def test_webrtc_cross_site_peer_is_closed(scope: Any) -> None:
    feed = Feed(
        {"type": "webrtc.connect"},
        {"type": "webrtc.datachannel.open", "label": "chat"},
        {"type": "webrtc.datachannel.close", "label": "chat"},
        {"type": "webrtc.disconnect", "reason": "consumer_closed"},
    )
    await OriginValidator(Recorder(), ALLOWED)(scope("webrtc", headers=origin(b"https://evil.test")), feed.receive, feed.send)
    assert feed.sent == [{"type": "webrtc.close"}]
    assert feed.messages == []  # every event of the peer ended here
    feed = Feed({"type": "webrtc.disconnect", "reason": "closed"})
    await OriginValidator(Recorder(), ALLOWED)(scope("webrtc", headers=origin(b"https://evil.test")), feed.receive, feed.send)
    assert feed.sent == []


async def test_scopes_without_browser_origins_pass_through() -> None:
    inner = Recorder()
    validator = OriginValidator(inner, [])
    await validator({"type": "udp", "reply_channel": "gateway.t!u"}, None, None)
    await validator({"type": "channel", "channel": "thumbnails"}, None, None)
    assert inner.calls == 2


async def test_allowed_hosts_validator_reads_settings_per_connection(scope: Any) -> None:
    inner = Recorder()
    validator = AllowedHostsOriginValidator(inner)
    feed = Feed({"type": "websocket.connect"})
    await validator(scope(headers=origin(b"http://127.0.0.1:8000")), feed.receive, feed.send)
    assert inner.calls == 1
    with override_settings(ALLOWED_HOSTS=["other.test"]):
        await validator(scope(headers=origin(b"http://127.0.0.1:8000")), feed.receive, feed.send)
    assert inner.calls == 1 and feed.sent == [{"type": "websocket.close", "code": 4403}]


@pytest.mark.parametrize(
    ("debug", "value", "allowed"),
    [
        (True, b"http://localhost:8000", True),
        (True, b"http://app.localhost:8000", True),
        (True, b"http://127.0.0.1:8000", True),
        (True, b"http://[::1]:8000", True),
        (True, b"http://evil.test", False),
        (False, b"http://localhost:8000", False),  # no ALLOWED_HOSTS in production: nothing
    ],
)
async def test_allowed_hosts_debug_defaults(debug: bool, value: bytes, allowed: bool, scope: Any) -> None:
    inner = Recorder()
    feed = Feed({"type": "websocket.connect"})
    with override_settings(ALLOWED_HOSTS=[], DEBUG=debug):
        await AllowedHostsOriginValidator(inner)(scope(headers=origin(value)), feed.receive, feed.send)
    assert inner.calls == (1 if allowed else 0)


class Hello(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=f"hello {self.scope['user']}")


async def test_validator_around_auth_stack_and_router(run_app: Any, scope: Any) -> None:
    from django.urls import path

    router = URLRouter([path("ws/hello/", Hello.as_asgi())])
    app = AllowedHostsOriginValidator(AuthMiddlewareStack(router))
    assert app.routes_by_path and app.application is not None
    top = ProtocolTypeRouter({"websocket": app})
    assert AllowedHostsOriginValidator(top).application_mapping is top.application_mapping

    runner = run_app(top, scope(path="/ws/hello/", headers=origin(b"http://127.0.0.1:8000")))
    await runner.send_input({"type": "websocket.connect"})
    assert (await runner.receive_output())["type"] == "websocket.accept"
    assert (await runner.receive_output())["text"] == "hello AnonymousUser"

    refused = run_app(top, scope(path="/ws/hello/", headers=origin(b"https://evil.test")))
    await refused.send_input({"type": "websocket.connect"})
    assert (await refused.receive_output()) == {"type": "websocket.close", "code": 4403}
    await refused.wait()
