"""The MQTT plugin: the gateway as an MQTT client, one gateway connection per broker session.

MQTT is a client protocol for the gateway: it connects *out* to a broker, subscribes to
topic filters and publishes. Following the connectionless shape of the design, the plugin
opens ONE gateway :class:`~switchboard.gateway.server.Connection` for its broker session
(scope ``{"type": "mqtt", "broker": ..., "client_id": ...}``) that lives as long as the
plugin, across reconnects, so ``reply_channel`` never changes under a consumer. Every
incoming PUBLISH becomes one ``mqtt.message`` event on it; consumers answer with
``mqtt.publish``, ``mqtt.subscribe`` and ``mqtt.unsubscribe`` (``specs/mqtt.md``).

All MQTT framing, keepalive, QoS handshakes, topic validation and reconnection belong to
paho-mqtt (2.x API, ``CallbackAPIVersion.VERSION2``); this module is translation and policy.

Why paho's own network thread (``loop_start``) and not paho driven by asyncio
(the ``add_reader``/socket-callback pattern):

* paho's reconnection (exponential backoff from ``reconnect_delay_set``, retrying the very
  first connection, ``on_connect_fail``) lives in its ``loop_forever``; the socket-callback
  pattern leaves reconnection, backoff and keepalive timers to us, i.e. a second, untested
  copy of the hardest part of an MQTT client.
* ``reconnect()`` does blocking DNS resolution, TCP connect and TLS handshake. Driven from
  asyncio these would run on the gateway's event loop and freeze every HTTP and WebSocket
  connection of the process for as long as an unreachable broker takes to time out.
* A bug in a callback stays in paho's thread (``suppress_exceptions`` plus our own
  try/except) instead of surfacing in the gateway loop.

The cost is one thread per plugin and one thread hop per message. Inbound, paho's thread
hands each message to the event loop with ``loop.call_soon_threadsafe`` into a *bounded*
queue (full: dropped and counted) that one task drains into ``gateway.send_event``
(``ChannelFull``: dropped and counted): under overload MQTT's answer here is loss, not
unbounded memory (at-most-once). Outbound, ``deliver`` runs on the loop and
calls paho's thread-safe ``publish``/``subscribe``, which only queue packets for paho's
thread and never block on the network.

Subscriptions (configured and runtime ``mqtt.subscribe``) are remembered by the plugin and
re-sent on every (re)connect, so they survive broker restarts and clean sessions.

A consumer's ``mqtt.publish`` goes out only to topics the ``publish_topics`` filters match
(none by default). Why: the gateway publishes under its own broker credentials, and a
consumer often takes its reply topic from the request (MQTT 5 ``response_topic``); without
a bound, whoever can publish a request can make the gateway publish anywhere its account
may (another tenant's command topics, retained messages). Refused publishes are counted
(``publish_dropped_topic``) and logged, never sent.

QoS 1 and 2 messages on a durable ``switchboard.mqtt`` pool (the default; specs/layer.md,
Durable channels) are at-least-once instead: paho runs with ``manual_ack``, and the plugin
acknowledges a message (PUBACK; PUBCOMP for QoS 2) only once the layer has stored it.
Until then the broker holds it (and caps how many are in flight, so they cannot pile up
here): a full pool or a layer error means a retry with backoff, never a drop, and a
gateway killed before the acknowledgement gets the message again from the broker when its
persistent session (``clean_session = false``, a fixed ``client_id``) resumes. paho sends
QoS 2's PUBREC itself on receipt and hands the message over at PUBREL, keeping no session
state on disk: a gateway killed in that one round trip loses a QoS 2 message, which is
why docs/mqtt.md recommends QoS 1 (with idempotent consumers) for durable delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, cast
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from switchboard.gateway.config import ConfigError
from switchboard.gateway.layers import Message
from switchboard.gateway.plugins import MESSAGES_IN, MESSAGES_OUT, REPLIES_INVALID, EventOutcome, ProtocolPlugin
from switchboard.messages import (
    MqttMessageEvent,
    MqttMessageEventProperties,
    MqttPublishEvent,
    MqttSubscribeEvent,
    MqttToGateway,
    MqttUnsubscribeEvent,
)

if TYPE_CHECKING:
    from switchboard.gateway.server import Connection, Gateway

logger = logging.getLogger("switchboard.protocols.mqtt")
paho_logger = logging.getLogger("switchboard.protocols.mqtt.paho")


class _DropReconnectNoise(logging.Filter):
    """Drop paho's "Client is not connected" ERROR, logged on every retry while the broker
    is away; the plugin reports that state itself (``disconnected``/``cannot connect``,
    rate-limited), so operators see one clear line instead of an error per loop turn."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


paho_logger.addFilter(_DropReconnectNoise())

SPEC_VERSION = "1.0"
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
_SCHEMES = {"mqtt": (False, 1883), "mqtts": (True, 8883)}
_VERSIONS = {"3.1.1": paho.MQTTv311, "311": paho.MQTTv311, "5": paho.MQTTv5, "5.0": paho.MQTTv5}
# The largest payload an MQTT packet can carry (remaining length limit minus headers).
MAX_MQTT_PAYLOAD = 268_435_455

# Filters per SUBSCRIBE packet when resubscribing (some brokers limit one packet's size).
_SUBSCRIBE_BATCH = 100
# Queued events sent to the layer together (one round trip for all of them).
_DRAIN_BATCH = 64

# Inbound counters: each received PUBLISH ends in exactly one of these (or is queued).
INBOUND_OUTCOMES = (
    "delivered",
    "dropped_oversize",
    "dropped_bad_topic",
    "dropped_queue_full",
    "events_full",
    "events_failed",
    "dropped_shutdown",
    "dropped_error",
    # Durable pool, QoS > 0: bigger than the pool's max_message_size (acknowledged, or
    # the broker would send it again for ever), or not acknowledged when the plugin
    # stopped (the broker sends it again when the session resumes; not a drop).
    "events_too_large",
    "left_for_redelivery",
)
# Durable pool, QoS > 0: messages that waited (unacknowledged, retried with backoff)
# because the pool was full or the layer failed; each message counted once.
DURABLE_COUNTERS = ("deferred_full", "deferred_layer_error")
# Outbound counters (replies_invalid: not a valid mqtt.publish/subscribe/unsubscribe, by
# the spec or the topic rules; the log line says which and why).
OUTBOUND_COUNTERS = (
    "messages_out",
    "publish_queued",
    "replies_invalid",
    "publish_dropped_oversize",
    "publish_dropped_disconnected",
    "publish_dropped_queue_full",
    "publish_dropped_topic",
    "subscribed",
    "subscribe_refused",
    "unsubscribed",
    "outbound_errors",
)
SESSION_COUNTERS = ("connects", "connect_refused", "connect_failures", "disconnects")

# MQTT 5 PUBLISH properties as they appear in messages (snake_case) <-> paho's names.
# Topic Alias is left out on purpose: it is connection state paho and the broker manage.
PUBLISH_PROPERTIES = {
    "payload_format_indicator": "PayloadFormatIndicator",
    "message_expiry_interval": "MessageExpiryInterval",
    "content_type": "ContentType",
    "response_topic": "ResponseTopic",
    "correlation_data": "CorrelationData",
    "user_properties": "UserProperty",
}
_INBOUND_ONLY_PROPERTIES = {"subscription_identifiers": "SubscriptionIdentifier"}


# -- topic rules (paho's own checks, plus what brokers enforce and paho does not) ------------


def _forbidden_characters() -> re.Pattern[str]:
    """Characters a broker refuses in a topic: controls, surrogates, Unicode noncharacters."""
    ranges = ["\x00-\x1f", "\x7f-\x9f", "\ud800-\udfff", "\ufdd0-\ufdef"]
    ranges += [re.escape(chr(plane * 0x10000 + low)) for plane in range(17) for low in (0xFFFE, 0xFFFF)]
    return re.compile("[" + "".join(ranges) + "]")


_FORBIDDEN = _forbidden_characters()


def _check_text(value: Any, what: str) -> bytes:
    """``value`` as the UTF-8 bytes MQTT puts on the wire, or ValueError saying why not.

    paho checks wildcards and length but not the characters: the MQTT spec forbids U+0000
    and brokers (Mosquitto) *disconnect the client* for control characters or invalid
    UTF-8 in a topic. One consumer's bad topic must not cost every consumer the session.
    """
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    bad = _FORBIDDEN.search(value)
    if bad is not None:
        raise ValueError(f"{what} {value[:80]!r} contains U+{ord(bad.group()):04X}, which MQTT forbids")
    return value.encode("utf-8")


def check_topic_name(topic: Any) -> str:
    """Raise ValueError unless ``topic`` is a valid topic to publish to (no wildcards)."""
    encoded = _check_text(topic, "topic")
    try:
        paho.Client._raise_for_invalid_topic(encoded)  # wildcards, length: paho's own rule
    except ValueError as exc:
        raise ValueError(f"topic {topic[:80]!r}: {exc}") from None
    return cast(str, topic)


def check_topic_filter(topic: Any) -> str:
    """Raise ValueError unless ``topic`` is a valid subscription filter (``a/+/c``, ``a/#``)."""
    encoded = _check_text(topic, "topic filter")
    if paho.Client._filter_wildcard_len_check(encoded) != MQTTErrorCode.MQTT_ERR_SUCCESS:
        raise ValueError(f"topic filter {topic[:80]!r} is invalid: '+' and '#' must fill a whole level, '#' only last")
    return cast(str, topic)


def check_qos(qos: Any, what: str = "qos") -> int:
    if isinstance(qos, bool) or not isinstance(qos, int) or qos not in (0, 1, 2):
        raise ValueError(f"{what} must be 0, 1 or 2, got {qos!r}")
    return qos


# -- options -------------------------------------------------------------------------------


class Broker(NamedTuple):
    """One broker address from the ``brokers`` option."""

    url: str
    host: str
    port: int
    tls: bool


def parse_broker(url: str) -> Broker:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` to a :class:`Broker`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"broker {url!r}: {exc}") from None
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"broker {url!r}: scheme must be mqtt:// or mqtts://")
    if parts.username is not None or parts.password is not None:
        # Credentials in a URL end up in logs and in every event's scope.
        raise ValueError(f"broker URLs must not hold credentials; use the username and password options ({parts.hostname})")
    if not parts.hostname:
        raise ValueError(f"broker {url!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker {url!r}: only scheme://host:port is understood")
    tls, default_port = _SCHEMES[parts.scheme]
    return Broker(url, parts.hostname, port or default_port, tls)


def parse_subscription(item: Any, default_qos: int, where: str) -> tuple[str, int]:
    """A ``subscriptions`` entry (``"a/+/b"`` or ``{"topic": "a/#", "qos": 1}``) to ``(filter, qos)``."""
    if isinstance(item, str):
        return check_topic_filter(item), default_qos
    if isinstance(item, dict):
        unknown = set(item) - {"topic", "qos"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; known: topic, qos")
        if "topic" not in item:
            raise ValueError(f"{where}: needs a 'topic'")
        return check_topic_filter(item["topic"]), check_qos(item.get("qos", default_qos), f"{where}.qos")
    raise ValueError(f"{where}: expected a topic filter string or {{'topic': ..., 'qos': ...}}, got {item!r}")


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")


@dataclass
class MqttOptions:
    """Options of ``SWITCHBOARD["PROTOCOLS"]["mqtt"]``; checked before any connection opens."""

    #: Broker URLs, ``mqtt://host:port`` or ``mqtts://host:port`` (TLS). With several, each
    #: reconnect attempt goes to the next one in order (wrapping around).
    brokers: list[str] = field(default_factory=lambda: [DEFAULT_BROKER])
    #: MQTT client id; default ``switchboard-<gateway id>`` (new on every start, so set it
    #: for a persistent session). Two live clients with one id kick each other off.
    client_id: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never logged, never in scope
    #: TLS (``mqtts://`` only): CA bundle (default: the system's), client certificate/key.
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    #: Skip certificate and host name verification: for test brokers only.
    tls_insecure: bool = False
    #: ``"3.1.1"`` or ``"5"``. MQTT 5 adds message properties (response topic...).
    protocol_version: str | int = "3.1.1"
    #: Default QoS of ``subscriptions`` entries and of ``mqtt.publish`` without ``qos``.
    qos: int = 0
    #: MQTT 3.1.1 clean session / MQTT 5 clean start. False keeps the broker session
    #: (and QoS 1/2 messages sent while the gateway was away) under a fixed ``client_id``.
    clean_session: bool = True
    #: MQTT 5 session expiry interval in seconds (0: the session ends with the connection).
    session_expiry: int = 0
    keepalive: int = 60
    #: Topic filters subscribed at every (re)connect: ``"sensors/+/temp"`` or
    #: ``{"topic": "cmd/#", "qos": 1}``.
    subscriptions: list[str | dict[str, Any]] = field(default_factory=list)
    #: Reconnect backoff: first wait, doubled per failed attempt up to the maximum.
    reconnect_min_delay: float = 1.0
    reconnect_max_delay: float = 60.0
    #: Larger payloads are dropped, in both directions, and counted.
    max_payload_size: int = 1024 * 1024
    #: QoS 1/2 publishes paho keeps while in flight or disconnected; beyond: dropped, counted.
    max_queued_messages: int = 1000
    #: Received messages waiting for the layer; beyond: dropped, counted.
    inbound_queue_size: int = 1000
    #: TCP/TLS connect timeout, and how long ``start`` waits for the first connection
    #: (then it returns and paho keeps retrying in the background).
    connect_timeout: float = 5.0
    #: Topic filters (``+`` one level, ``#`` the rest) a consumer's ``mqtt.publish`` may
    #: go to: ``["myapp/replies/#", "myapp/alerts/+"]``. Others are refused, counted and
    #: logged. Empty (the default): consumers cannot publish at all, so the gateway's broker
    #: account never publishes where a request told it to unless this allows it.
    publish_topics: list[str] = field(default_factory=list)
    #: When set, ``"online"`` is published here (retained, QoS 1) once subscribed, and
    #: ``"offline"`` on stop and, as the will, if the gateway dies without a goodbye.
    status_topic: str | None = None
    #: When set, the final counters are written there as JSON when the plugin stops.
    stats_file: str | None = None
    #: How long a stop waits for received messages to reach the layer.
    drain_timeout: float = 5.0

    def __post_init__(self) -> None:
        brokers = self.broker_list()
        if len({broker.tls for broker in brokers}) > 1:
            raise ValueError("brokers: mix of mqtt:// and mqtts:// URLs; TLS settings are shared, use one scheme")
        tls = brokers[0].tls
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not tls:
                raise ValueError(f"{name} is set but the brokers are mqtt:// (use mqtts:// for TLS)")
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"{name} {path!r} is not a readable file")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        if self.tls_insecure and not tls:
            raise ValueError("tls_insecure is set but the brokers are mqtt://")
        if self.password is not None and self.username is None:
            raise ValueError("password needs username")
        if self.client_id is not None:
            _check_text(self.client_id, "client_id")
            _check_range("client_id length", len(self.client_id.encode()), 1, 65535)
        version = self.paho_protocol  # raises for an unknown version
        if self.session_expiry and version != paho.MQTTv5:
            raise ValueError("session_expiry needs protocol_version 5")
        check_qos(self.qos)
        _check_range("session_expiry", self.session_expiry, 0, 2**32 - 1)
        _check_range("keepalive", self.keepalive, 1, 65535)
        _check_range("reconnect_min_delay", self.reconnect_min_delay, 0.01, 3600)
        _check_range("reconnect_max_delay", self.reconnect_max_delay, self.reconnect_min_delay, 86400)
        _check_range("max_payload_size", self.max_payload_size, 0, MAX_MQTT_PAYLOAD)
        _check_range("max_queued_messages", self.max_queued_messages, 1, 10_000_000)
        _check_range("inbound_queue_size", self.inbound_queue_size, 1, 10_000_000)
        _check_range("connect_timeout", self.connect_timeout, 0.1, 600)
        _check_range("drain_timeout", self.drain_timeout, 0, 3600)
        if self.status_topic is not None:
            check_topic_name(self.status_topic)
        if not isinstance(self.publish_topics, list):
            raise ValueError("publish_topics must be a list of topic filters")
        for index, topic_filter in enumerate(self.publish_topics):
            try:
                check_topic_filter(topic_filter)
            except ValueError as exc:
                raise ValueError(f"publish_topics[{index}]: {exc}") from None
        self.subscription_map()  # validates every filter

    def may_publish(self, topic: str) -> bool:
        """Whether a consumer may publish to ``topic`` (a ``publish_topics`` filter matches it)."""
        return any(paho.topic_matches_sub(topic_filter, topic) for topic_filter in self.publish_topics)

    def broker_list(self) -> list[Broker]:
        if not self.brokers:
            raise ValueError("brokers: give at least one mqtt:// or mqtts:// URL")
        return [parse_broker(url) for url in self.brokers]

    def subscription_map(self) -> dict[str, int]:
        """``subscriptions`` as ``{filter: qos}`` (a later entry for the same filter wins)."""
        return dict(parse_subscription(item, self.qos, f"subscriptions[{i}]") for i, item in enumerate(self.subscriptions))

    @property
    def paho_protocol(self) -> MQTTProtocolVersion:
        version = _VERSIONS.get(str(self.protocol_version))
        if version is None:
            raise ValueError(f"protocol_version must be '3.1.1' or '5', got {self.protocol_version!r}")
        return version

    @property
    def version_label(self) -> str:
        return "5" if self.paho_protocol == paho.MQTTv5 else "3.1.1"


# -- message translation ---------------------------------------------------------------------


def properties_to_dict(properties: Properties | None) -> dict[str, Any]:
    """MQTT 5 PUBLISH properties as the ``properties`` dict of an ``mqtt.message``."""
    result: dict[str, Any] = {}
    if properties is None:
        return result
    for key, name in (*PUBLISH_PROPERTIES.items(), *_INBOUND_ONLY_PROPERTIES.items()):
        if hasattr(properties, name):
            value = getattr(properties, name)
            if key == "user_properties":
                value = [[str(k), str(v)] for k, v in value]
            elif key == "subscription_identifiers":
                value = list(value)
            result[key] = value
    return result


def properties_from_dict(data: dict[str, Any]) -> Properties:
    """An ``mqtt.publish`` ``properties`` dict as paho PUBLISH properties; ValueError if bad."""
    properties = Properties(PacketTypes.PUBLISH)
    for key, value in data.items():
        name = PUBLISH_PROPERTIES.get(key)
        if name is None:
            raise ValueError(f"unknown property {key!r}; known: {', '.join(PUBLISH_PROPERTIES)}")
        if key == "response_topic":
            check_topic_name(value)
        elif key == "content_type":
            _check_text(value, "content_type")
        elif key == "correlation_data" and not isinstance(value, bytes):
            raise ValueError(f"correlation_data must be bytes, got {type(value).__name__}")
        elif key in ("payload_format_indicator", "message_expiry_interval"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{key} must be an int, got {value!r}")
            _check_range(key, value, 0, 1 if key == "payload_format_indicator" else 2**32 - 1)
        elif key == "user_properties":
            value = _user_properties(value)
        try:
            setattr(properties, name, value)
        except (MQTTException, TypeError, ValueError) as exc:
            raise ValueError(f"property {key}: {exc}") from None
    return properties


def _user_properties(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, (list, tuple)):
        raise ValueError("user_properties must be a list of [name, value] pairs")
    pairs = []
    for pair in value:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(p, str) for p in pair):
            raise ValueError(f"user_properties entries must be [str, str], got {pair!r}")
        pairs.append((pair[0], pair[1]))
    return pairs


class _Publish(NamedTuple):
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None


class BadMessage(ValueError):
    """An outbound message that must not go out; ``counter`` names what to count."""

    def __init__(self, counter: str, reason: str) -> None:
        super().__init__(reason)
        self.counter = counter


# -- the plugin ----------------------------------------------------------------------------


class MqttPlugin(ProtocolPlugin[MqttOptions]):
    """MQTT client session: ``mqtt.message`` events in; publish/subscribe/unsubscribe out."""

    name: ClassVar[str] = "mqtt"
    Options: ClassVar[type[Any]] = MqttOptions
    scope_types: ClassVar[tuple[str, ...]] = ("mqtt",)

    def __init__(self, options: MqttOptions) -> None:
        super().__init__(options)
        self.brokers = options.broker_list()
        self.connected = False
        self.client: paho.Client | None = None
        self.connection: Connection | None = None
        self._broker_index = 0
        self._subscriptions = options.subscription_map()  # configured + runtime, by filter
        self._lock = threading.Lock()  # counters and subscriptions: paho's thread and the loop
        self._loop: asyncio.AbstractEventLoop | None = None
        # (event, packet id, qos, connection number): what the manual acknowledgement needs.
        self._queue: asyncio.Queue[tuple[Message, int, int, int]] | None = None
        # Bumped at every (re)connect: a packet id means something only on the connection
        # it arrived on, so a message from an earlier one is never acknowledged on a later
        # one (the broker sends it again; acking its old id could ack another message).
        self._connection_number = 0
        # QoS > 0 messages are stored durably and acknowledged after (set at start).
        self._durable = False
        self._drainer: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[Any]] = set()  # batches on their way to the layer
        self._send_room = asyncio.Event()  # set while fewer than inbound_queue_size are in flight
        self._ready: asyncio.Event | None = None
        self._ready_mid: int | None = None
        self._accepting = False
        self._stopping = False
        self._in_flight = 0
        self._handoff = 0  # handed to call_soon_threadsafe, not yet in the queue
        for counter in (MESSAGES_IN, *INBOUND_OUTCOMES, *OUTBOUND_COUNTERS, *SESSION_COUNTERS, *DURABLE_COUNTERS):
            self.counters[counter] = 0

    def count(self, counter: str, amount: int = 1) -> None:
        """Thread-safe: paho's thread and the event loop both count."""
        with self._lock:
            self.counters[counter] = self.counters.get(counter, 0) + amount

    @property
    def broker(self) -> Broker:
        """The broker the current (or next) connection attempt goes to."""
        return self.brokers[self._broker_index]

    def subscriptions(self) -> dict[str, int]:
        """The filters subscribed at every (re)connect: configured plus runtime ones."""
        with self._lock:
            return dict(self._subscriptions)

    def endpoints(self, gateway: Gateway) -> list[str]:
        topics = ", ".join(self.subscriptions()) or "no subscriptions yet"
        state = "connected" if self.connected else "connecting"
        return [f"{self.broker.url}  ({state}; topics {topics})"]

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, gateway: Gateway) -> None:
        """Open the gateway connection and start paho's thread; wait (bounded) until subscribed."""
        options = self.options
        self._loop = asyncio.get_running_loop()
        self.gateway = gateway
        # Unbounded: the bound is applied per message in _enqueue (QoS 0 only on a durable
        # pool, where the broker's in-flight window bounds the others).
        self._queue = asyncio.Queue()
        self._ready = asyncio.Event()
        self._durable = gateway.layer.durable.options_for("switchboard.mqtt") is not None
        client_id = options.client_id or f"switchboard-{gateway.id}"
        scope = {
            "type": "mqtt",
            "asgi": {"version": "3.0", "spec_version": SPEC_VERSION},
            "broker": self.brokers[0].url,
            "client_id": client_id,
            "protocol_version": options.version_label,
        }
        if not options.clean_session and options.client_id is None:
            logger.warning(
                "mqtt: clean_session is false but client_id is not set: the default id is new at "
                "every start, so the broker session cannot be resumed"
            )
        if self._durable:
            self._check_durable(gateway)
        self.connection = gateway.open_connection(scope, self.deliver)
        self._drainer = self._loop.create_task(self._drain(), name="mqtt-drain")
        try:
            self.client = self._build_client(client_id)
        except (OSError, ssl.SSLError, ValueError) as exc:
            await self.stop(0)
            raise ConfigError(f"PROTOCOLS.mqtt: {exc}") from exc
        self._accepting = True
        if not options.publish_topics:
            logger.info("mqtt: publish_topics is empty, so consumers' mqtt.publish messages are refused")
        self._target(self.client, self.broker)
        self.client.loop_start()
        logger.info("mqtt: connecting to %s as %s (MQTT %s)", self.broker.url, client_id, options.version_label)
        try:
            await asyncio.wait_for(self._ready.wait(), options.connect_timeout)
        except TimeoutError:
            logger.warning(
                "mqtt: not connected to %s after %.1fs; serving anyway, paho keeps retrying",
                ", ".join(self.options.brokers),
                options.connect_timeout,
            )

    def _check_durable(self, gateway: Gateway) -> None:
        """Warn about settings that weaken at-least-once delivery of QoS > 0 messages."""
        options = self.options
        if any(qos > 0 for qos in self.subscriptions().values()) and (options.clean_session or options.client_id is None):
            logger.warning(
                "mqtt: QoS 1/2 messages are stored durably and acknowledged after, but clean_session is true or "
                "client_id unset: those in flight when the gateway stops end with the broker session "
                "(set clean_session = false and a fixed client_id; docs/mqtt.md)"
            )
        durable = gateway.layer.durable.options_for("switchboard.mqtt")
        if durable is not None and options.max_payload_size > durable.max_message_size:
            logger.warning(
                "mqtt: max_payload_size %d is over the durable pool's max_message_size %d: larger QoS 1/2 messages "
                "are acknowledged and dropped (dropped_too_large)",
                options.max_payload_size,
                durable.max_message_size,
            )

    def _build_client(self, client_id: str) -> paho.Client:
        options = self.options
        v5 = options.paho_protocol == paho.MQTTv5
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=options.paho_protocol,
            clean_session=None if v5 else options.clean_session,
            reconnect_on_failure=True,
            manual_ack=self._durable,
        )
        client.enable_logger(paho_logger)
        client.suppress_exceptions = True  # a callback bug must not end paho's thread
        client.connect_timeout = options.connect_timeout
        # paho annotates these as int but computes with floats; sub-second delays work.
        client.reconnect_delay_set(cast(int, options.reconnect_min_delay), cast(int, options.reconnect_max_delay))
        client.max_queued_messages_set(options.max_queued_messages)
        if options.username is not None:
            client.username_pw_set(options.username, options.password)
        if self.brokers[0].tls:
            client.tls_set(
                ca_certs=options.ca_file,
                certfile=options.cert_file,
                keyfile=options.key_file,
                cert_reqs=ssl.CERT_NONE if options.tls_insecure else ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(options.tls_insecure)
        if options.status_topic is not None:
            client.will_set(options.status_topic, b"offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _target(self, client: paho.Client, broker: Broker) -> None:
        """Point the next connection attempt at ``broker`` (paho's public connect_async)."""
        v5 = self.options.paho_protocol == paho.MQTTv5
        properties = None
        if v5 and self.options.session_expiry:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.options.session_expiry
        client.connect_async(
            broker.host,
            broker.port,
            keepalive=self.options.keepalive,
            clean_start=self.options.clean_session if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )

    async def stop(self, timeout: float) -> None:
        """Say goodbye, stop paho's thread, drain received messages to the layer, close."""
        self._stopping = True
        self._accepting = False
        client = self.client
        if client is not None:
            if self.connected and self.options.status_topic is not None:
                client.publish(self.options.status_topic, b"offline", qos=1, retain=True)
            client.disconnect()
            with contextlib.suppress(TimeoutError):
                # Joining paho's thread blocks (up to a select timeout): not on the loop.
                await asyncio.wait_for(asyncio.to_thread(client.loop_stop), max(timeout, 2.0))
        drain = min(timeout, self.options.drain_timeout)
        if self._queue is not None and self._queued():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain)
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        if self._queue is not None:
            while not self._queue.empty():
                _event, _mid, qos, _number = self._queue.get_nowait()
                self.count("left_for_redelivery" if self._durable and qos > 0 else "dropped_shutdown")
        if self.gateway is not None and self.connection is not None:
            self.gateway.close_connection(self.connection)
        self.gateway = None
        self.report_stats()

    def stats(self) -> dict[str, int]:
        """Counters plus gauges ``queued``, ``connected`` and ``subscriptions``.

        Invariant: ``messages_in == queued + sum(counters[o] for o in INBOUND_OUTCOMES)``.
        """
        with self._lock:
            stats = dict(self.counters)
            stats["subscriptions"] = len(self._subscriptions)
        stats["queued"] = self._queued()
        stats["connected"] = int(self.connected)
        return stats

    def _queued(self) -> int:
        return self._handoff + (self._queue.qsize() if self._queue is not None else 0) + self._in_flight

    # -- paho callbacks (paho's thread: never raise, never block) ----------------------

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Properties | None
    ) -> None:
        if reason.is_failure:
            self.count("connect_refused")
            self.log.warning("connection refused", f"{self.broker.url}: {reason}")
            return
        self.connected = True
        self._connection_number += 1
        self.count("connects")
        subscriptions = self.subscriptions()
        logger.info("mqtt: connected to %s; subscribing to %d filter(s)", self.broker.url, len(subscriptions))
        if not subscriptions:
            self._on_ready(client)
            return
        items = list(subscriptions.items())
        mid = None
        try:
            for start in range(0, len(items), _SUBSCRIBE_BATCH):
                result, mid = client.subscribe(items[start : start + _SUBSCRIBE_BATCH])
                if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return  # the connection is gone again; the next connect retries
        except ValueError as exc:  # filters are validated before they get here; be safe
            logger.error("mqtt: resubscribing failed: %s", exc)
            return
        self._ready_mid = mid  # SUBACKs come in order: the last one means all are in place

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Properties | None
    ) -> None:
        failures = [str(reason) for reason in reasons if reason.is_failure]
        if failures:
            self.count("subscribe_refused", len(failures))
            self.log.warning("subscription refused", f"broker refused {len(failures)} filter(s) (mid {mid}): {failures}")
        if mid == self._ready_mid:
            self._ready_mid = None
            self._on_ready(client)

    def _on_ready(self, client: paho.Client) -> None:
        """Connected and subscribed: announce it (status topic) and wake ``start``."""
        if self.options.status_topic is not None:
            client.publish(self.options.status_topic, b"online", qos=1, retain=True)
        self._call_soon(self._set_ready)

    def _set_ready(self) -> None:
        if self._ready is not None:
            self._ready.set()

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self.count("connect_failures")
        self.log.warning("cannot connect", f"to {self.broker.url} (network or TLS failure); retrying with backoff")
        self._next_broker(client)

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Properties | None
    ) -> None:
        was_connected, self.connected = self.connected, False
        if self._stopping:
            return
        if was_connected:  # a refused CONNECT ends here too; connect_refused counted it
            self.count("disconnects")
            self.log.warning("disconnected", f"from {self.broker.url}: {reason}; reconnecting with backoff")
        self._next_broker(client)

    def _next_broker(self, client: paho.Client) -> None:
        if len(self.brokers) < 2 or self._stopping:
            return
        self._broker_index = (self._broker_index + 1) % len(self.brokers)
        try:
            self._target(client, self.broker)
        except (RuntimeError, ValueError) as exc:
            logger.error("mqtt: cannot switch to broker %s: %s", self.broker.url, exc)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        """Turn one PUBLISH into an ``mqtt.message`` event and hand it to the loop."""
        self.count(MESSAGES_IN)
        try:
            outcome = self._hand_over(message)
        except Exception:  # a bug must neither end paho's thread nor lose the count
            logger.exception("mqtt: handling a received message failed")
            outcome = "dropped_error"
        if outcome is not None:
            self.count(outcome)
            if self._durable and message.qos > 0 and outcome != "dropped_shutdown":
                # Dropped for good (bad topic, oversize): acknowledged, or the broker would
                # send it again at every reconnect. Not when shutting down: then it comes again.
                client.ack(message.mid, message.qos)

    def _hand_over(self, message: paho.MQTTMessage) -> str | None:
        """Queue the event for the loop; the drop counter when it cannot be, else None."""
        try:
            topic = message.topic  # decodes UTF-8
        except UnicodeDecodeError:
            self.log.warning("bad topic", "a message with a topic that is not UTF-8 was dropped")
            return "dropped_bad_topic"
        payload = message.payload
        if len(payload) > self.options.max_payload_size:
            self.log.warning(
                "oversize message",
                f"{len(payload)} bytes on {topic[:200]!r} > max_payload_size {self.options.max_payload_size}",
            )
            return "dropped_oversize"
        event: MqttMessageEvent = {
            "type": "mqtt.message",
            "topic": topic,
            "payload": bytes(payload),
            "qos": message.qos,
            "retain": bool(message.retain),
            "properties": cast(MqttMessageEventProperties, properties_to_dict(getattr(message, "properties", None))),
        }
        with self._lock:
            self._handoff += 1
        if not self._call_soon(self._enqueue, (dict(event), message.mid, message.qos, self._connection_number)):
            with self._lock:
                self._handoff -= 1
            return "dropped_shutdown"
        return None

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> bool:
        """Run ``callback`` on the gateway's loop; False when the loop is gone."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # closed between the check and the call
            return False
        return True

    # -- inbound (the loop) ----------------------------------------------------------

    def _enqueue(self, item: tuple[Message, int, int, int]) -> None:
        with self._lock:
            self._handoff -= 1
        event, _mid, qos, _number = item
        if not self._accepting or self._queue is None:
            self.count("left_for_redelivery" if self._durable and qos > 0 else "dropped_shutdown")
            return
        if self._queue.qsize() + self._in_flight >= self.options.inbound_queue_size and not (self._durable and qos > 0):
            self.count("dropped_queue_full")
            self.log.warning("queue full", f"{self._queue.qsize()} messages wait for the layer; {event['topic'][:200]!r} dropped")
            return
        self._queue.put_nowait(item)

    async def _drain(self) -> None:
        """Send queued events to the pool: all those waiting at once, one layer round trip."""
        assert self._queue is not None
        queue = self._queue
        limit = self.options.inbound_queue_size
        while True:
            while self._in_flight >= limit:  # the layer is slow: let the queue's bound apply
                self._send_room.clear()
                await self._send_room.wait()
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < _DRAIN_BATCH:
                batch.append(queue.get_nowait())
            self._in_flight += len(batch)
            # Not awaited: a QoS 1 message waiting for room (or for the layer to come back)
            # must not hold up the ones behind it. Each settles its own count (in flight,
            # outcome, task_done) as it ends; sends start in order, so they are stored in order.
            task = asyncio.get_running_loop().create_task(self._send_batch(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send_batch(self, batch: list[tuple[Message, int, int, int]]) -> None:
        await asyncio.gather(*(self._send_one(*item) for item in batch))

    async def _send_one(self, event: Message, mid: int, qos: int, number: int) -> None:
        """One event to the pool. QoS > 0 on a durable pool: stored, then acknowledged, or retried.

        Each message's fate is counted once, here (``send_event`` only logs): its outcome
        is one of INBOUND_OUTCOMES, which keeps the invariant of :meth:`stats`.
        """
        assert self.connection is not None
        durable = self._durable and qos > 0
        outcome = "left_for_redelivery" if durable else "dropped_shutdown"  # what a cancellation amounts to
        try:
            if durable:
                outcome = await self._store(event, mid, qos, number)
                return
            sent = await self.send_event(self.connection, event, durable=False, count=False)
            # At most once: full or failed, the message is dropped (send_event logged why).
            outcome = "delivered" if sent is EventOutcome.SENT else sent.value
        finally:
            self._in_flight -= 1
            self._send_room.set()
            self.count(outcome)
            if self._queue is not None:
                self._queue.task_done()

    async def _store(self, event: Message, mid: int, qos: int, number: int) -> str:
        """Store a QoS > 0 event durably, then acknowledge it; until stored, retry (no ack meanwhile)."""
        assert self.connection is not None
        delay = 0.05
        deferred: str | None = None
        while True:
            sent = await self.send_event(self.connection, event, count=False)
            if sent is EventOutcome.SENT:
                self._ack(mid, qos, number)
                return "delivered"
            if sent is EventOutcome.TOO_LARGE:  # acknowledged: the broker would send it again for ever
                self._ack(mid, qos, number)
                return "events_too_large"
            # Full, the layer down, or stored without its replicas: the broker keeps it meanwhile.
            reason = "deferred_full" if sent is EventOutcome.FULL else "deferred_layer_error"
            if deferred is None:
                deferred = reason
                self.count(reason)
            if self._stopping:
                return "left_for_redelivery"
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _ack(self, mid: int, qos: int, number: int) -> None:
        """PUBACK (QoS 1) or PUBCOMP (QoS 2); paho only queues it for its thread."""
        client = self.client
        if client is not None and number == self._connection_number and self.connected:
            client.ack(mid, qos)

    # -- outbound (the loop) ---------------------------------------------------------

    def deliver(self, message: Message) -> None:
        """Carry out one message from a consumer, or log and count why not. Never raises."""
        kind = message.get("type")
        if not self.reply_is_valid(message):  # the spec: counted and logged if not
            return
        reply = cast(MqttToGateway, message)
        try:
            if reply["type"] == "mqtt.publish":
                self._publish(self._check_publish(reply))
            elif reply["type"] == "mqtt.subscribe":
                self._subscribe(reply)
            else:
                self._unsubscribe(reply)
        except BadMessage as exc:
            self.drop_reply(message, str(exc), counter=exc.counter)  # the counter is from a fixed set
        except Exception:  # a bug here must not break the gateway's reply loop
            self.count("outbound_errors")
            logger.exception("mqtt: carrying out %r failed", str(kind)[:100])

    def _check_publish(self, message: MqttPublishEvent) -> _Publish:
        try:
            topic = check_topic_name(message["topic"])
            payload = message["payload"]
            if isinstance(payload, str):
                payload = payload.encode("utf-8")
            qos = check_qos(message.get("qos", self.options.qos))
            raw_properties = message.get("properties") or {}
            properties = None
            if raw_properties:
                if self.options.paho_protocol != paho.MQTTv5:
                    raise ValueError("properties need protocol_version 5 (the session is MQTT 3.1.1)")
                properties = properties_from_dict(dict(raw_properties))
        except ValueError as exc:
            raise BadMessage(REPLIES_INVALID, f"mqtt.publish: {exc}") from None
        if not self.options.may_publish(topic):
            raise BadMessage(
                "publish_dropped_topic",
                f"publish to {topic[:200]!r} refused: no publish_topics filter matches it "
                f"(PROTOCOLS.mqtt.publish_topics: {self.options.publish_topics!r})",
            )
        if len(payload) > self.options.max_payload_size:
            raise BadMessage(
                "publish_dropped_oversize",
                f"{len(payload)} bytes to {topic[:200]!r} > max_payload_size {self.options.max_payload_size}",
            )
        return _Publish(topic, payload, qos, bool(message.get("retain", False)), properties)

    def _publish(self, publish: _Publish) -> None:
        client = self.client
        if client is None or self._stopping:
            raise BadMessage("publish_dropped_disconnected", f"plugin not running; publish to {publish.topic[:200]!r} dropped")
        try:
            info = client.publish(publish.topic, publish.payload, publish.qos, publish.retain, publish.properties)
        except ValueError as exc:  # paho's own checks (already done above; be safe)
            raise BadMessage(REPLIES_INVALID, f"mqtt.publish: {exc}") from None
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.count(MESSAGES_OUT if self.connected else "publish_queued")
        elif info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and publish.qos > 0:
            self.count("publish_queued")  # paho keeps QoS 1/2 and sends it on reconnect
        elif info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            raise BadMessage(
                "publish_dropped_queue_full",
                f"{self.options.max_queued_messages} QoS 1/2 messages already wait; publish to {publish.topic[:200]!r} dropped",
            )
        else:
            raise BadMessage(
                "publish_dropped_disconnected",
                f"not connected to the broker; QoS 0 publish to {publish.topic[:200]!r} dropped ({paho.error_string(info.rc)})",
            )

    def _subscribe(self, message: MqttSubscribeEvent) -> None:
        try:
            topic = check_topic_filter(message["topic"])
            qos = check_qos(message.get("qos", self.options.qos))
        except ValueError as exc:
            raise BadMessage(REPLIES_INVALID, f"mqtt.subscribe: {exc}") from None
        with self._lock:
            self._subscriptions[topic] = qos  # remembered: re-sent on every reconnect
        self.count("subscribed")
        client = self.client
        if client is not None and self.connected:
            client.subscribe(topic, qos)  # NO_CONN is fine: on_connect subscribes all

    def _unsubscribe(self, message: MqttUnsubscribeEvent) -> None:
        try:
            topic = check_topic_filter(message["topic"])
        except ValueError as exc:
            raise BadMessage(REPLIES_INVALID, f"mqtt.unsubscribe: {exc}") from None
        with self._lock:
            self._subscriptions.pop(topic, None)
        self.count("unsubscribed")
        client = self.client
        if client is not None and self.connected:
            client.unsubscribe(topic)
