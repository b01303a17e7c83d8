"""Blocking clients that speak each protocol *badly* on purpose: raw sockets, raw frames.

Library clients refuse to produce malformed input (which is the point of a library), so the
fuzz tests write bytes themselves and read back just enough to tell what the gateway did:
an HTTP status, a WebSocket close code, an SMTP reply code.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
from dataclasses import dataclass, field

from support.waiting import deadline

TIMEOUT = deadline(10)  # a safety net for one answer (scaled)


# -- HTTP -----------------------------------------------------------------------------


@dataclass
class HttpAnswer:
    """What came back for raw request bytes: a response, or ``closed`` / ``timeout``."""

    status: int | None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    raw: bytes = b""
    outcome: str = ""

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


def _parse_head(head: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip(), value.strip()))
    return status, headers


def http_exchange(port: int, data: bytes, *, timeout: float = TIMEOUT, wait: float | None = None) -> HttpAnswer:
    """Send ``data`` on a new connection and read one response (or see the server close).

    ``wait`` bounds how long to wait for the *first* byte: an incomplete request is
    legitimately left waiting by the server, and the test says so by passing it.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server may close before reading everything (413, 431): read its answer
        received = b""
        sock.settimeout(wait if wait is not None else timeout)
        try:
            while b"\r\n\r\n" not in received:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
                sock.settimeout(timeout)
        except TimeoutError:
            if not received:
                return HttpAnswer(None, raw=received, outcome="no answer (incomplete request)")
        except ConnectionResetError:
            if not received:
                return HttpAnswer(None, outcome="reset")
        if b"\r\n\r\n" not in received:
            return HttpAnswer(None, raw=received, outcome="closed" if not received else "truncated")
        head, _, rest = received.partition(b"\r\n\r\n")
        status, headers = _parse_head(head)
        answer = HttpAnswer(status, headers, raw=received)
        length = answer.header(b"content-length")
        try:
            if length is not None:
                while len(rest) < int(length):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    rest += chunk
            elif answer.header(b"transfer-encoding") is None and status not in (101, 204, 304):
                while chunk := sock.recv(65536):
                    rest += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        answer.body = rest
        answer.raw = head + b"\r\n\r\n" + rest
        answer.outcome = str(status)
        return answer


def request_bytes(method: str = "GET", target: str = "/", headers: list[tuple[str, str]] | None = None,
                  body: bytes = b"") -> bytes:
    """A well-formed HTTP/1.1 request (with ``content-length`` when there is a body)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def valid_request_works(port: int) -> bool:
    """The liveness probe after each batch: a plain GET reaches a worker and comes back."""
    answer = http_exchange(port, request_bytes("GET", "/alive"))
    return answer.status == 200 and answer.body == b"ok 0"


# -- WebSocket ------------------------------------------------------------------------


def ws_handshake(port: int, path: str = "/ws/echo", *, extra: bytes = b"") -> tuple[socket.socket, bytes]:
    """Open a WebSocket with a valid handshake; the socket and the handshake response."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            break
        response += chunk
    head, _, rest = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise ConnectionError(f"handshake refused: {head[:200]!r}")
    if rest:
        raise AssertionError(f"server sent frames before any request: {rest!r}")
    return sock, head


def frame_bytes(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bytes | None = b"\x11\x22\x33\x44",
                declared_length: int | None = None) -> bytes:
    """One frame exactly as told: any opcode, RSV bits, mask or none, any declared length."""
    first = (0x80 if fin else 0) | ((rsv & 0x7) << 4) | (opcode & 0x0F)
    length = len(payload) if declared_length is None else declared_length
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if mask is None:
        return header + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


@dataclass
class ServerFrame:
    opcode: int
    payload: bytes
    fin: bool

    @property
    def close_code(self) -> int | None:
        if self.opcode != 8:
            return None
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else 1005


class FrameReader:
    """Reads server frames from one socket, keeping what it read past the frames returned.

    One TCP read can carry several frames (a pong and the echo right behind it): a reader
    that returned the first and dropped the rest of its buffer would then wait for bytes
    the server had already sent. That was the intermittent "valid fragmented message ->
    timeout" of the WebSocket fuzz test on a loaded machine, where such reads coalesce.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def read(
        self, *, until_close: bool = True, timeout: float = TIMEOUT, max_frames: int = 1000
    ) -> tuple[list[ServerFrame], str]:
        """Frames until a close frame (or EOF / timeout), or the first one with ``until_close=False``."""
        self.sock.settimeout(timeout)
        frames: list[ServerFrame] = []
        ended = "eof"
        try:
            while len(frames) < max_frames:
                while True:
                    parsed = _parse_server_frame(self.buffer)
                    if parsed is None:
                        break
                    frame, self.buffer = parsed
                    frames.append(frame)
                    if frame.opcode == 8:
                        return frames, "close"
                    if not until_close:
                        return frames, "frame"
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.buffer += chunk
        except TimeoutError:
            ended = "timeout"
        except ConnectionResetError:
            ended = "reset"
        return frames, ended


def read_frames(sock: socket.socket, *, until_close: bool = True, timeout: float = TIMEOUT,
                max_frames: int = 1000) -> tuple[list[ServerFrame], str]:
    """Server frames until a close frame (or EOF / timeout), for a socket read only once.

    Reading one socket several times needs a :class:`FrameReader`, which keeps the bytes
    past the frames it returned.
    """
    return FrameReader(sock).read(until_close=until_close, timeout=timeout, max_frames=max_frames)


def _parse_server_frame(buffer: bytes) -> tuple[ServerFrame, bytes] | None:
    if len(buffer) < 2:
        return None
    first, second = buffer[0], buffer[1]
    length = second & 0x7F
    offset = 2
    if length == 126:
        if len(buffer) < 4:
            return None
        length = struct.unpack("!H", buffer[2:4])[0]
        offset = 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length = struct.unpack("!Q", buffer[2:10])[0]
        offset = 10
    if second & 0x80:
        raise AssertionError("the server masked a frame (RFC 6455 5.1 forbids it)")
    if len(buffer) < offset + length:
        return None
    return ServerFrame(first & 0x0F, buffer[offset : offset + length], bool(first & 0x80)), buffer[offset + length :]


# -- SMTP -----------------------------------------------------------------------------


class SmtpRaw:
    """A plain socket speaking SMTP by hand, for lines no SMTP library would send."""

    def __init__(self, address: tuple[str, int], timeout: float = TIMEOUT) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.banner = self.reply()

    def reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply; ``(0, "closed")`` when the server hung up."""
        lines = []
        while True:
            try:
                line = self.file.readline()
            except (ConnectionResetError, TimeoutError):
                return 0, "closed"
            if not line:
                return 0, "closed"
            lines.append(line.decode("utf-8", "replace").rstrip("\r\n"))
            if line[3:4] != b"-":
                try:
                    return int(line[:3]), "\n".join(lines)
                except ValueError as exc:
                    raise AssertionError(f"not an SMTP reply: {line!r}") from exc

    def command(self, line: bytes) -> tuple[int, str]:
        try:
            self.sock.sendall(line + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return 0, "closed"
        return self.reply()

    def send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def close(self) -> None:
        self.file.close()
        self.sock.close()


# -- UDP ------------------------------------------------------------------------------


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(TIMEOUT)
    return sock


# -- MQTT -----------------------------------------------------------------------------


class MqttClient:
    """A plain paho client on the shared broker (a device or a script), messages in a queue."""

    def __init__(self, port: int = 1883) -> None:
        import queue
        import secrets
        import threading

        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sb-rel-{secrets.token_hex(4)}")
        self.client.on_connect = lambda *args: self.connected.set()
        self.client.on_message = lambda client, userdata, message: self.messages.put(message)
        self.client.connect_async("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(TIMEOUT):
            raise ConnectionError("cannot connect to the MQTT broker")

    def subscribe(self, topic: str) -> None:
        import threading

        done = threading.Event()
        self.client.on_subscribe = lambda *args: done.set()
        self.client.subscribe(topic, 1)
        if not done.wait(TIMEOUT):
            raise ConnectionError(f"no SUBACK for {topic}")

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(TIMEOUT)

    def get(self, timeout: float = TIMEOUT) -> tuple[str, bytes]:
        message = self.messages.get(timeout=timeout)
        return str(message.topic), bytes(message.payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
