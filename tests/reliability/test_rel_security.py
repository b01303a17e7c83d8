"""Security checks: limits, rates, secrets in logs, and who can reach a reply channel.

Covered elsewhere and only referenced (docs/reliability.md lists them): Twilio signatures
(tests/sms), WebSocket and HTTP origin checks (tests/auth/test_auth_origins.py), body,
frame, datagram, message and offer size limits (tests/protocols, tests/udp, tests/smtp,
tests/webrtc), SMTP recipient domains (tests/smtp). What is here:

- limits the gateway did not have when this suite was written (header size, connections
  per IP, message rates) and bugs the fuzz suite found: they were strict xfails and are
  plain tests since the fixes (docs/reliability.md, "Findings");
- no secret from configuration reaches a log line, at DEBUG, even when Redis fails;
- reply channels: unguessable, validated by the layer, never shown to a client, and a
  forged one reaches no connection.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import shutil
import socket
import string
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rel_clients import MqttClient, frame_bytes, http_exchange, read_frames, request_bytes, ws_handshake
from rel_fuzz import OFFER_SDP, REPLY_CHANNEL_RE, fuzz_settings
from rel_harness import (
    SMS_PUBLIC_BASE_URL,
    FuzzLedger,
    InProcessGateway,
    LogCapture,
    ProcessDeployment,
)
from support.mosquitto import MosquittoServer, mosquitto_binary
from support.redis_server import RedisServer
from support.waiting import deadline, wait_until_sync
from twilio.request_validator import RequestValidator
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from switchboard.gateway.layers import build_layer
from switchboard.gateway.layers.names import InvalidName, check_channel_name, check_group_name
from switchboard.gateway.server import Gateway

Deploy = Callable[..., ProcessDeployment]


@pytest.fixture(scope="module")
def http_gateway() -> Iterator[InProcessGateway]:
    """HTTP + WebRTC plugins and a worker, in-process, for the checks that need no processes."""
    gateway = InProcessGateway({
        "http": {"bind": ["127.0.0.1:0"], "max_frame_size": 64 * 1024},
        "webrtc": {"ice_host_addresses": ["127.0.0.1"], "connect_timeout": 2.0},
    }).start()
    yield gateway
    gateway.stop()


# -- limits: header block, connections per address, message rate -------------------------


@pytest.mark.parametrize(
    "headers",
    [pytest.param(b"X-Big: " + b"a" * (1024 * 1024) + b"\r\n", id="one 1 MiB header"),
     pytest.param(b"".join(b"X-H%d: v\r\n" % i for i in range(20_000)), id="20,000 headers")],
)
def test_huge_header_blocks_get_431(http_gateway: InProcessGateway, headers: bytes) -> None:
    """A header block far beyond any real client's (RFC 9110: 431) never reaches a worker."""
    answer = http_exchange(http_gateway.http_port, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert answer.status in (400, 431), f"a {len(headers)}-byte header block got {answer.outcome}"


def test_connections_per_ip_are_limited() -> None:
    """With ``max_connections_per_ip: 5`` a sixth socket from one address is refused (503),
    while another address (127.0.0.2) still gets in."""
    gateway = InProcessGateway({"http": {"bind": ["127.0.0.1:0"], "max_connections_per_ip": 5,
                                          "max_connections_per_ip_exempt": []}}).start()
    try:
        url = f"ws://127.0.0.1:{gateway.http_port}/ws/echo"
        with contextlib.ExitStack() as open_sockets:
            for _ in range(5):
                open_sockets.enter_context(connect(url, open_timeout=deadline(10)))
            with pytest.raises(InvalidStatus) as refused, connect(url, open_timeout=deadline(10)):
                pass
            assert refused.value.response.status_code == 503
            other = socket.create_connection(("127.0.0.1", gateway.http_port), source_address=("127.0.0.2", 0))
            other.close()
    finally:
        gateway.stop()


def test_websocket_message_rate_is_limited() -> None:
    """With ``websocket_max_messages_per_second: 50`` a client sending thousands is closed with 1008."""
    gateway = InProcessGateway({"http": {"bind": ["127.0.0.1:0"], "websocket_max_messages_per_second": 50}}).start()
    try:
        with connect(f"ws://127.0.0.1:{gateway.http_port}/ws/echo", open_timeout=deadline(10)) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(5000):
                    ws.send("x")
                while True:  # the echoes of the messages within the rate come first
                    ws.recv(10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    finally:
        gateway.stop()


# -- bugs the fuzz suite found ----------------------------------------------------------

#: The exact input the WebSocket fuzz found: an empty text frame without FIN, a
#: continuation holding one byte that is not UTF-8, and the client's close, in one write.
BAD_TEXT_AND_CLOSE = frame_bytes(1, b"", fin=False) + frame_bytes(0, b"\x80") + frame_bytes(8, b"\x03\xe8")


def test_invalid_utf8_text_and_close_in_one_segment_gets_1007(http_gateway: InProcessGateway) -> None:
    """RFC 6455 8.1: a text message that is not UTF-8 fails the connection with 1007, even when
    the client's close frame arrives in the same read (the fuzz's minimal failing input)."""
    sock, _ = ws_handshake(http_gateway.http_port)
    try:
        sock.sendall(BAD_TEXT_AND_CLOSE)
        frames, ended = read_frames(sock)
    finally:
        sock.close()
    codes = [frame.close_code for frame in frames if frame.opcode == 8]
    assert codes == [1007], f"got {codes} ({ended})"


def test_a_client_cannot_make_the_gateway_log_tracebacks(http_gateway: InProcessGateway, log_capture: LogCapture) -> None:
    """Client mistakes are counted and answered, not logged as errors: otherwise any client
    can fill the gateway's logs (and page whoever watches ERROR lines)."""
    mark = log_capture.mark()
    for _ in range(3):
        sock, _ = ws_handshake(http_gateway.http_port)
        sock.sendall(frame_bytes(1, b"\xff\xfe"))
        frames, _ = read_frames(sock)
        sock.close()
        assert [f.close_code for f in frames if f.opcode == 8] == [1007]
    traced = [r for r in log_capture.since(mark) if r.exc_info and r.levelno >= logging.ERROR]
    assert not traced, f"{len(traced)} traceback(s) logged for 3 bad frames: {traced[0].getMessage()!r}"


def test_offer_without_mid_gets_400_not_500(http_gateway: InProcessGateway) -> None:
    """An offer aiortc refuses is the client's mistake: 400 per specs/webrtc.md, not a 500 with a traceback."""
    offer = OFFER_SDP.replace("a=mid:0\r\n", "a=mid\n0\r\n")  # the fuzz's input: ':' became a line feed
    connection = http.client.HTTPConnection("127.0.0.1", http_gateway.http_port, timeout=deadline(20))
    try:
        connection.request("POST", "/webrtc/offer/x/", body=json.dumps({"type": "offer", "sdp": offer}),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 400, (response.status, body)


# -- secrets in logs --------------------------------------------------------------------

REDIS_PASSWORD = "rel-redis-Pa55-" + "9d2c" * 3
MQTT_PASSWORD = "rel-mqtt-Pa55-" + "7b1e" * 3
TWILIO_TOKEN = "rel-twilio-T0ken-" + "3a8f" * 3


@pytest.fixture
def auth_mosquitto(tmp_path: Path) -> Iterator[int]:
    """A private Mosquitto that refuses anonymous clients; user ``gateway`` / MQTT_PASSWORD."""
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None or mosquitto_binary() is None:
        pytest.skip("mosquitto and mosquitto_passwd are needed")
    password_file = tmp_path / "passwd"
    subprocess.run([passwd, "-c", "-b", str(password_file), "gateway", MQTT_PASSWORD], check=True, capture_output=True)
    broker = MosquittoServer(tmp_path, f"password_file {password_file}\n", anonymous=False)
    broker.start()
    try:
        yield broker.port
    finally:
        broker.kill()


def test_secrets_never_appear_in_logs_at_debug(
    deploy: Deploy, private_redis: Callable[..., RedisServer], auth_mosquitto: int
) -> None:
    """Gateway and worker at DEBUG with a Redis password, an MQTT password and a Twilio token.

    Exercised: HTTP, WebSocket, a signed and a forged webhook, MQTT both ways, and Redis
    going away and coming back (connection errors are where URLs with passwords leak).
    Not one log line may hold a secret.
    """
    redis = private_redis(password=REDIS_PASSWORD)
    deployment = deploy(
        redis.url, protocols="http,sms,mqtt", SWITCHBOARD_LOG_LEVEL="DEBUG", REL_SMS_AUTH_TOKEN=TWILIO_TOKEN,
        REL_MQTT_BROKER=f"mqtt://127.0.0.1:{auth_mosquitto}", REL_MQTT_USERNAME="gateway",
        REL_MQTT_PASSWORD=MQTT_PASSWORD, REL_MQTT_PREFIX="rel-secret",
    )
    with connect(f"ws://127.0.0.1:{deployment.http_port}/ws/echo", open_timeout=deadline(10)) as ws:
        ws.send("hello")
        assert ws.recv(10) == "hello"
    fields = {"MessageSid": "SM" + "1" * 32, "From": "+15550001111", "To": "+15550002222", "Body": "hi"}
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(SMS_PUBLIC_BASE_URL + "/sms/inbound", fields)
    for sig in (signature, "forged"):
        connection = http.client.HTTPConnection("127.0.0.1", deployment.http_port, timeout=deadline(10))
        connection.request("POST", "/sms/inbound", body=urlencode(fields),
                           headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": sig})
        assert connection.getresponse().status == (200 if sig == signature else 403)
        connection.close()
    mqtt = _mqtt_with_password(auth_mosquitto)
    try:
        mqtt.subscribe("rel-secret/out")
        wait_until_sync(lambda: _published(mqtt, "rel-secret/in/x"), what="the MQTT round trip")
    finally:
        mqtt.close()
    redis.kill()
    time.sleep(1.0)  # let both processes fail against the missing Redis (and log it)
    redis.start()
    deployment.wait_http()
    deployment.stop_all()
    logs = {path.name: path.read_text(errors="replace") for path in deployment.log_dir.glob("*.log")}
    assert any(" DEBUG " in text for text in logs.values()), "the processes did not log at DEBUG"
    for name, text in logs.items():
        for secret in (REDIS_PASSWORD, MQTT_PASSWORD, TWILIO_TOKEN):
            assert secret not in text, f"{name} logs a secret ({secret[:8]}...)"


def _mqtt_with_password(port: int) -> MqttClient:
    """MqttClient authenticating as ``gateway`` (the broker refuses anonymous clients)."""
    import paho.mqtt.client as paho

    original = paho.Client.connect_async

    def with_credentials(self: paho.Client, *args: object, **kwargs: object) -> None:
        self.username_pw_set("gateway", MQTT_PASSWORD)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    paho.Client.connect_async = with_credentials  # type: ignore[method-assign]
    try:
        return MqttClient(port)
    finally:
        paho.Client.connect_async = original  # type: ignore[method-assign]


def _published(mqtt: MqttClient, topic: str) -> bool:
    mqtt.publish(topic, b"ping")
    try:
        return json.loads(mqtt.get(timeout=1.0)[1])["topic"] == topic
    except Exception:
        return False


# -- reply channels ---------------------------------------------------------------------


def test_reply_channel_tokens_are_unguessable() -> None:
    """``gateway.<id>!<token>``: the token is ``secrets.token_urlsafe(9)``, 72 random bits.

    A reply channel is a capability: whoever can name it can write to that client. Only
    the gateway and workers (trusted code with layer access) ever see one; 72 bits from the
    system CSPRNG put guessing one out of reach even for them.
    """
    layer = build_layer({"BACKEND": "memory"})
    gateway = Gateway(layer)
    tokens = set()
    alphabet = set(string.ascii_letters + string.digits + "-_")
    for _ in range(20_000):
        scope: dict[str, object] = {"type": "websocket"}
        gateway.open_connection(scope, lambda message: None)
        channel = str(scope["reply_channel"])
        prefix, _, token = channel.partition("!")
        assert prefix == f"gateway.{gateway.id}" and set(token) <= alphabet
        assert len(token) * math.log2(len(alphabet)) >= 64, f"token {token!r} has under 64 bits"
        check_channel_name(channel)
        tokens.add(token)
    assert len(tokens) == 20_000


def test_a_name_checked_before_is_judged_the_same_the_next_time() -> None:
    """The check remembers names that passed as channels to send to, and only those."""
    from switchboard.gateway.layers import names

    assert check_channel_name("gateway.abc!", receive=True) == "gateway.abc!"
    with pytest.raises(InvalidName, match="process-local prefix"):
        check_channel_name("gateway.abc!")  # passed only as a name to read from
    for _ in range(2):
        assert check_channel_name("gateway.abc!token") == "gateway.abc!token"
        with pytest.raises(InvalidName):
            check_channel_name("gateway.abc!tok en")
    for n in range(names._CHECKED_KEPT + 10):
        check_channel_name(f"chat.{n}")
    assert len(names._checked_channels) <= names._CHECKED_KEPT


NAMES = st.one_of(st.text(max_size=120), st.text(string.ascii_letters + string.digits + "-_.!/ \n\x00", max_size=120))


@fuzz_settings(500)
@given(name=NAMES)
def test_the_layer_refuses_every_name_outside_the_rules(name: str, fuzz_ledger: FuzzLedger) -> None:
    """A channel or group name is valid by the rule of specs/layer.md, or refused with
    ``InvalidName`` (a ValueError): never passed on to a Redis key or a reply channel."""
    import re

    if name.endswith("\n"):
        name = name.rstrip("\n") + "\x00"  # trailing newlines have their own test below; keep the name invalid
    channel_ok = bool(re.fullmatch(r"[a-zA-Z\d\-_.]+(![\w\-.]*)?", name)) and len(name) <= 100 and not name.endswith("!")
    try:
        check_channel_name(name)
        assert channel_ok, f"accepted channel name {name!r}"
        fuzz_ledger.record("layer names", "memory", "valid: accepted")
    except InvalidName:
        assert not channel_ok, f"refused valid channel name {name!r}"
        fuzz_ledger.record("layer names", "memory", "invalid: InvalidName")
    group_ok = bool(re.fullmatch(r"[a-zA-Z\d\-_.]+", name)) and len(name) <= 100
    try:
        check_group_name(name)
        assert group_ok
    except InvalidName:
        assert not group_ok


@pytest.mark.parametrize("check, name", [(check_group_name, "lobby\n"), (check_channel_name, "gateway.abc!tok\n"),
                                         (check_channel_name, "thumbnails\n")])
def test_names_with_a_trailing_newline_are_refused(check: Callable[[str], str], name: str) -> None:
    """The name rules of specs/layer.md allow no newline anywhere, the end included."""
    with pytest.raises(InvalidName):
        check(name)


def test_forged_reply_channels_reach_no_connection(http_gateway: InProcessGateway) -> None:
    """A consumer writing to made-up reply channels of this gateway reaches no client.

    Two clients are connected; 1,000 ``websocket.send`` messages go to random tokens under
    the gateway's prefix: each is counted as orphaned and neither client gets a frame. The
    bare prefix (the gateway's shared list) cannot be sent to at all.
    """
    import secrets

    assert http_gateway.gateway is not None and http_gateway.layer is not None
    gateway, layer = http_gateway.gateway, http_gateway.layer
    url = f"ws://127.0.0.1:{http_gateway.http_port}/ws/echo"
    with connect(url, open_timeout=deadline(10)) as first, connect(url, open_timeout=deadline(10)) as second:
        before = gateway.stats.replies_orphaned

        async def forge() -> None:
            for _ in range(1000):
                await layer.send(gateway.reply_prefix + secrets.token_urlsafe(9), {"type": "websocket.send", "text": "forged"})

        http_gateway.call(forge)
        wait_until_sync(lambda: gateway.stats.replies_orphaned - before >= 1000, what="forged replies to be orphaned")
        for ws in (first, second):
            ws.send("mine")
            assert ws.recv(10) == "mine", "a forged message reached a real connection"

    async def bare() -> None:
        await layer.send(gateway.reply_prefix, {"type": "websocket.send", "text": "x"})

    with pytest.raises(InvalidName):
        http_gateway.call(bare)


def test_gateway_own_answers_carry_no_reply_channel() -> None:
    """The gateway's own answers (503 no worker, denials) name no reply channel either."""
    gateway = InProcessGateway({"http": {"bind": ["127.0.0.1:0"], "response_timeout": 0.5}}, worker=False).start()
    try:
        answer = http_exchange(gateway.http_port, request_bytes("POST", "/x", body=b"body"))
        assert answer.status == 503
        assert REPLY_CHANNEL_RE.search(answer.raw) is None
        with pytest.raises(InvalidStatus) as denied:
            connect(f"ws://127.0.0.1:{gateway.http_port}/ws/echo", open_timeout=deadline(10))
        response = denied.value.response
        assert response.status_code == 503
        raw = bytes(response.body or b"") + str(list(response.headers.raw_items())).encode()
        assert REPLY_CHANNEL_RE.search(raw) is None
    finally:
        gateway.stop()
