"""Invalid messages, scopes and envelopes are rejected with errors that name the type and key."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from switchboard.gateway.specs import (
    GATEWAY_TO_WORKER,
    WORKER_TO_GATEWAY,
    SpecError,
    spec_for,
    validate_envelope,
    validate_message,
    validate_scope,
    validate_serializable,
)

REPLY = "gateway.3f2a9c1b7d4e!hV3kq9xZ0aBc"


def http_scope(**changes: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [[b"host", b"example.com"]],
        "client": ["127.0.0.1", 50000],
        "server": ["127.0.0.1", 8000],
        "reply_channel": REPLY,
    }
    scope.update(changes)
    return scope


def ws_scope(**changes: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/ws/",
        "query_string": b"",
        "headers": [[b"host", b"example.com"]],
        "subprotocols": ["chat"],
        "reply_channel": REPLY,
    }
    scope.update(changes)
    return scope


def rejects(obj: Any, match: str, *, validate: Any = validate_message, **kwargs: Any) -> SpecError:
    with pytest.raises(SpecError, match=match) as info:
        validate(obj, **kwargs)
    return info.value


# -- messages ---------------------------------------------------------------------------


def test_websocket_send_needs_exactly_one_of_bytes_and_text() -> None:
    validate_message({"type": "websocket.send", "text": "hi"})
    validate_message({"type": "websocket.send", "bytes": b"hi", "text": None})
    validate_message({"type": "websocket.send", "text": ""})  # empty text is still text
    error = rejects(
        {"type": "websocket.send", "bytes": b"x", "text": "x"},
        r"^websocket.send: exactly one of 'bytes', 'text' must be set \(not None\), got both$",
    )
    assert error.type_name == "websocket.send" and error.key is None
    rejects({"type": "websocket.send"}, "got none of them")
    rejects({"type": "websocket.send", "bytes": None, "text": None}, "got none of them")


@pytest.mark.parametrize(
    ("message", "match"),
    [
        ({"type": "websocket.send", "text": b"bytes in text"}, r"key text must be str \| None, got bytes b'bytes in text'"),
        ({"type": "websocket.send", "bytes": "text in bytes"}, r"key bytes must be bytes \| None, got str 'text in bytes'"),
        ({"type": "websocket.send", "bytes": bytearray(b"x")}, r"key bytes must be bytes \| None, got bytearray"),
        ({"type": "http.response.body", "body": "str body"}, "key body must be bytes, got str 'str body'"),
        ({"type": "http.response.body", "more_body": 1}, "key more_body must be bool, got int 1"),
        ({"type": "http.response.start", "status": "200"}, "key status must be int, got str '200'"),
        ({"type": "http.response.start", "status": True}, "key status must be int, got bool True"),
        ({"type": "http.response.start", "status": 200.0}, "key status must be int, got float 200.0"),
        ({"type": "websocket.accept", "subprotocol": 1}, r"key subprotocol must be str \| None, got int 1"),
        ({"type": "websocket.disconnect", "code": None}, "key code must be int, got None"),
    ],
)
def test_wrong_types_are_rejected(message: dict[str, Any], match: str) -> None:
    error = rejects(message, f"^{message['type']}: {match}")
    assert error.key == match.split()[1]


CLOSE_CODES = r"1000..1003, 1007..1014 or 3000..4999"


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4000, 4404, 4999])
def test_sendable_close_codes(code: int) -> None:
    validate_message({"type": "websocket.close", "code": code})


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535, -1])
def test_close_code_out_of_range(code: int) -> None:
    """Out of 1000-4999, reserved for reporting (1004-1006, 1015) or unassigned (1016-2999)."""
    error = rejects(
        {"type": "websocket.close", "code": code},
        rf"^websocket.close: key 'code' must be in {CLOSE_CODES}, got {code} \(RFC 6455 7.4: the codes an endpoint",
    )
    assert error.key == "code"


@pytest.mark.parametrize("code", [1000, 1005, 1006, 1015, 2000, 4999])
def test_disconnect_reports_any_code(code: int) -> None:
    """The gateway reports codes no endpoint may send (1005: none given, 1006: lost)."""
    validate_message({"type": "websocket.disconnect", "code": code}, direction=GATEWAY_TO_WORKER)


@pytest.mark.parametrize("code", [999, 5000])
def test_disconnect_code_out_of_range(code: int) -> None:
    rejects({"type": "websocket.disconnect", "code": code}, f"key 'code' must be in 1000..4999, got {code}$")


def test_close_reason_limit_counts_utf8_bytes() -> None:
    validate_message({"type": "websocket.close", "code": 4000, "reason": "x" * 123})
    validate_message({"type": "websocket.close", "code": 4000, "reason": "é" * 61})  # 122 bytes
    rejects({"type": "websocket.close", "reason": "x" * 124}, "key 'reason' must be at most 123 bytes in UTF-8, got 124")
    rejects({"type": "websocket.close", "reason": "é" * 62}, "got 124")


@pytest.mark.parametrize("status", [200, 204, 404, 599])
def test_status_in_range(status: int) -> None:
    validate_message({"type": "http.response.start", "status": status})
    validate_message({"type": "websocket.http.response.start", "status": status})


@pytest.mark.parametrize("status", [0, 100, 101, 199, 600, 1000])
def test_status_out_of_range(status: int) -> None:
    rejects({"type": "http.response.start", "status": status}, f"key 'status' must be in 200..599, got {status} ")
    rejects({"type": "websocket.http.response.start", "status": status}, "must be in 200..599")


@pytest.mark.parametrize(
    ("headers", "match"),
    [
        ({"content-type": b"text/plain"}, r"key headers must be list\[list\[bytes, bytes\]\], got dict of 1 items"),
        ([b"content-type", b"text/plain"], r"key headers\[0\] must be list\[bytes, bytes\], got bytes b'content-type'"),
        ([[b"content-type"]], r"key headers\[0\] must be list\[bytes, bytes\] \(exactly 2 items\), got 1 items"),
        ([[b"a", b"b", b"c"]], r"key headers\[0\] must be list\[bytes, bytes\] \(exactly 2 items\), got 3 items"),
        ([[b"a", b"b"], [b"content-type", "text/plain"]], r"key headers\[1\]\[1\] must be bytes, got str 'text/plain'"),
        ([["content-type", b"text/plain"]], r"key headers\[0\]\[0\] must be bytes, got str 'content-type'"),
        ([[b"a", None]], r"key headers\[0\]\[1\] must be bytes, got None"),
    ],
)
def test_headers_must_be_pairs_of_bytes(headers: Any, match: str) -> None:
    error = rejects({"type": "http.response.start", "status": 200, "headers": headers}, f"^http.response.start: {match}")
    assert error.key == "headers"
    # A fault inside the value also shows the key's whole type; one in the value itself need not.
    nested = str(error).startswith("http.response.start: key headers[")
    assert str(error).endswith("(key 'headers' is list[list[bytes, bytes]])") == nested


def test_headers_as_tuples_are_accepted() -> None:
    """Django builds response headers as tuples; the layer turns them into lists."""
    validate_message({"type": "http.response.start", "status": 200, "headers": [(b"a", b"b")]})
    validate_message({"type": "http.response.start", "status": 200, "headers": ((b"a", b"b"),)})


def test_missing_required_key() -> None:
    error = rejects({"type": "http.response.start"}, r"^http.response.start: missing required key 'status' \(int\)$")
    assert error.key == "status"
    rejects({"type": "websocket.disconnect"}, "missing required key 'code'")


def test_unknown_keys_are_allowed() -> None:
    validate_message({"type": "websocket.send", "text": "x", "x_compress": True})
    validate_message({"type": "http.response.start", "status": 200, "x_debug": {"timing": 1.5}})


def test_unknown_type_rejected_unless_allowed() -> None:
    error = rejects({"type": "chat.message", "text": "hi"}, r"^unknown message type 'chat.message'$")
    assert error.type_name == "chat.message" and error.key == "type"
    validate_message({"type": "chat.message", "text": "hi"}, allow_unknown=True)
    # A typo in a protocol type lists that protocol's types.
    rejects({"type": "websocket.sned", "text": "hi"}, r"websocket types are websocket.accept, websocket.close, ")


def test_allow_unknown_still_checks_known_types() -> None:
    rejects({"type": "websocket.send"}, "got none of them", allow_unknown=True)


def test_scope_type_is_not_a_message_type() -> None:
    rejects(http_scope(), "'http' is a scope type, not a message type")


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (["type", "websocket.send"], "a message must be a dict, got list of 2 items"),
        ({"text": "no type"}, "a message needs a str 'type' key, got None"),
        ({"type": b"websocket.send"}, "a message needs a str 'type' key, got bytes"),
        (None, "a message must be a dict, got None"),
    ],
)
def test_not_a_message(message: Any, match: str) -> None:
    rejects(message, match)


def test_direction() -> None:
    validate_message({"type": "websocket.send", "text": "x"}, direction=WORKER_TO_GATEWAY)
    validate_message({"type": "websocket.send", "text": "x"}, direction="worker->gateway")
    validate_message({"type": "websocket.receive", "text": "x"}, direction=GATEWAY_TO_WORKER)
    error = rejects(
        {"type": "websocket.receive", "text": "x"},
        r"^websocket.receive: travels gateway -> worker, not worker -> gateway$",
        direction=WORKER_TO_GATEWAY,
    )
    assert error.key == "type"
    rejects({"type": "http.response.start", "status": 200}, "travels worker -> gateway", direction=GATEWAY_TO_WORKER)
    with pytest.raises(ValueError, match="direction must be"):
        validate_message({"type": "websocket.send", "text": "x"}, direction="upstream")


# -- scopes ---------------------------------------------------------------------------


def test_valid_scopes() -> None:
    validate_scope(http_scope())
    validate_scope(ws_scope())
    validate_scope(http_scope(client=("127.0.0.1", 50000), server=("/run/sb.sock", None)))
    validate_scope(http_scope(client=None, server=None, extensions={"http.response.trailers": {}}))
    minimal = http_scope()
    for key in ("scheme", "raw_path", "root_path", "client", "server"):
        del minimal[key]
    validate_scope(minimal)
    validate_scope({"type": "channel", "channel": "thumbnails"})


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        # Name errors start with Channels' sentence (names.NAME_ERROR), then say what was wrong.
        ({"reply_channel": None}, "key reply_channel must be a channel name: Channel name must be .*, not a NoneType"),
        ({"reply_channel": "bad name"}, "key reply_channel must be a channel name: Channel name must be .*: 'bad name'"),
        ({"reply_channel": "gateway.x!"}, "key reply_channel must be a channel name: 'gateway.x!' is a process-local prefix"),
        ({"reply_channel": "g" * 101}, r"key reply_channel must be a channel name: Channel name .*: 'g+'\.{3} has 101 char"),
        ({"state": {"db": "pool"}}, r"key 'state' must not be present \(lifespan state is process-local"),
        ({"client": ["127.0.0.1", "50000"]}, r"key client\[1\] must be int, got str '50000'"),
        ({"client": ["127.0.0.1"]}, r"key client must be list\[str, int\] \(exactly 2 items\), got 1 items"),
        ({"server": ["h", 80, 1]}, r"key server must be list\[str, int \| None\] \(exactly 2 items\)"),
        ({"http_version": "3"}, r"key 'http_version' must be one of '1.0', '1.1', '2', got str '3'"),
        ({"http_version": 1.1}, "key http_version must be str, got float 1.1"),
        ({"scheme": "ftp"}, "key 'scheme' must be one of 'http', 'https'"),
        ({"method": None}, "key method must be str, got None"),
        ({"query_string": "a=1"}, "key query_string must be bytes, got str 'a=1'"),
        ({"asgi": {"spec_version": "2.3"}}, r"key asgi.version is required \(str\)"),
        ({"asgi": {"version": 3}}, "key asgi.version must be str, got int 3"),
        ({"asgi": "3.0"}, r"key asgi must be \{version: str, spec_version\?: str\}, got str '3.0'"),
        ({"extensions": {"x": True}}, r"key extensions\['x'\] must be dict, got bool True"),
        ({"extensions": {1: {}}}, "key extensions must have str keys, got key int 1"),
        ({"headers": [[b"host", "example.com"]]}, r"key headers\[0\]\[1\] must be bytes"),
    ],
)
def test_invalid_http_scope(changes: dict[str, Any], match: str) -> None:
    error = rejects(http_scope(**changes), f"^http scope: {match}", validate=validate_scope)
    assert error.type_name == "http"


def test_missing_scope_keys() -> None:
    for key in ("asgi", "http_version", "method", "path", "query_string", "headers", "reply_channel"):
        scope = http_scope()
        del scope[key]
        error = rejects(scope, f"^http scope: missing required key '{key}'", validate=validate_scope)
        assert error.key == key


def test_invalid_websocket_scope() -> None:
    rejects(ws_scope(subprotocols="chat"), r"key subprotocols must be list\[str\], got str", validate=validate_scope)
    rejects(ws_scope(subprotocols=["chat", 2]), r"key subprotocols\[1\] must be str, got int 2", validate=validate_scope)
    rejects(ws_scope(scheme="https"), "key 'scheme' must be one of 'ws', 'wss'", validate=validate_scope)
    rejects(ws_scope(state={}), "key 'state' must not be present", validate=validate_scope)


def test_unknown_scope_type() -> None:
    rejects({"type": "gopher"}, "^unknown scope type 'gopher'$", validate=validate_scope)
    rejects({"type": "websocket.send"}, "unknown scope type", validate=validate_scope)
    rejects("http", "a scope must be a dict", validate=validate_scope)


# -- envelopes --------------------------------------------------------------------------


def envelope(scope: dict[str, Any] | None = None, event: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "switchboard.event",
        "connection": REPLY,
        "scope": scope if scope is not None else ws_scope(),
        "event": event if event is not None else {"type": "websocket.receive", "text": "hi"},
    }
    data.update(changes)
    return data


def test_valid_envelopes() -> None:
    validate_envelope(envelope())
    validate_envelope(envelope(event={"type": "websocket.connect"}))
    validate_envelope(envelope(event={"type": "websocket.disconnect", "code": 1006}))
    validate_envelope(envelope(http_scope(), {"type": "http.request", "body": b"x", "more_body": False}))
    # A forwarded group message: user-defined, any shape the layer can carry.
    validate_envelope(envelope(event={"type": "chat.message", "text": "hi", "from": ["a", 1]}))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"type": "switchboard.events"}, "^an envelope has type 'switchboard.event', got 'switchboard.events'$"),
        ({"connection": "gateway.other!x"}, "connection 'gateway.other!x' is not the scope's reply_channel"),
        ({"connection": "no spaces allowed"}, "key connection must be a channel name"),
        ({"event": "websocket.receive"}, "^switchboard.event: key event must be dict, got str"),
        ({"scope": ws_scope(path=None)}, "^switchboard.event: key 'scope': websocket scope: key path must be str, got None$"),
        ({"scope": ws_scope(state={})}, "^switchboard.event: key 'scope': websocket scope: key 'state' must not be present"),
        ({"scope": {"type": "channel", "channel": REPLY}}, "not the scope's reply_channel None"),
        (
            {"event": {"type": "websocket.receive", "text": "a", "bytes": b"b"}},
            "^switchboard.event: key 'event': websocket.receive: exactly one of 'bytes', 'text'",
        ),
        # Types of the connection's own protocol are delivered to the plugin, never forwarded:
        ({"event": {"type": "websocket.hello"}}, "key 'event': unknown message type 'websocket.hello'"),
        ({"event": {"type": "websocket.send", "text": "x"}}, "key 'event': websocket.send: travels worker -> gateway"),
        ({"event": {"text": "x"}}, "key 'event': a message needs a str 'type' key"),
    ],
)
def test_invalid_envelopes(kwargs: dict[str, Any], match: str) -> None:
    rejects(envelope(**kwargs), match, validate=validate_envelope)


def test_envelope_missing_keys() -> None:
    for key in ("connection", "event"):
        data = envelope()
        del data[key]
        error = rejects(data, f"^switchboard.event: missing required key '{key}'", validate=validate_envelope)
        assert error.key == key


def test_envelope_to_a_claiming_worker_has_no_scope() -> None:
    data = envelope()
    del data["scope"]
    validate_envelope(data)
    rejects({**data, "claim": True}, "^switchboard.event: a claim envelope must carry the scope", validate=validate_envelope)
    rejects({**data, "event": {"type": "websocket.send", "text": "x"}}, "travels worker -> gateway", validate=validate_envelope)


def test_envelope_error_names_the_envelope_part() -> None:
    error = rejects(envelope(scope=ws_scope(headers=None)), "websocket scope: key headers", validate=validate_envelope)
    assert error.type_name == "switchboard.event" and error.key == "scope"


# -- serializable -----------------------------------------------------------------------


def test_serializable() -> None:
    validate_serializable({"type": "chat.message", "a": [1, 2.5, None, True, b"x", ("t", 1)], "b": {"c": {}}})
    validate_serializable({"n": 2**64 - 1, "m": -(2**63)})


@pytest.mark.parametrize(
    ("message", "match"),
    [
        ({"counts": {1: 2}}, r"^message\['counts'\] has a int key 1: layer maps need str keys$"),
        ({"tags": {"a", "b"}}, r"^message\['tags'\] is a set, which the layer cannot carry$"),
        ({"at": datetime.datetime(2024, 1, 1)}, r"message\['at'\] is a datetime"),
        ({"deep": [[{"x": object()}]]}, r"message\['deep'\]\[0\]\[0\]\['x'\] is a object"),
        ({"big": 2**64}, "int outside the 64-bit range"),
        ({b"raw": 1}, "has a bytes key b'raw'"),
    ],
)
def test_not_serializable(message: dict[str, Any], match: str) -> None:
    rejects(message, match, validate=validate_serializable)


def test_spec_error_is_a_value_error() -> None:
    assert issubclass(SpecError, ValueError)
    assert spec_for("websocket.receive").keys["text"].type == "str | None"
