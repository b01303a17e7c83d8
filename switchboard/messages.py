"""Types of every message and scope in ``switchboard/specs/``: generated, do not edit.

Made by :mod:`switchboard.gateway.spec_typing` from the spec blocks; regenerate with
``python -m switchboard.gateway.spec_typing --write`` after editing a spec (a test fails
until you do). ``<Protocol>ToWorker`` / ``<Protocol>ToGateway`` are the unions of the
messages travelling each way.
"""

# No ``from __future__ import annotations``: TypedDict reads NotRequired[] at class creation.
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NotRequired, TypedDict


class ChannelScope(TypedDict):
    """``channel`` scope: specs/layer.md."""

    type: Literal["channel"]
    channel: str


class EmailScopeAsgi(TypedDict):
    """The ``asgi`` of :class:`EmailScope`."""

    version: str
    spec_version: NotRequired[str]


class EmailScope(TypedDict):
    """``email`` scope: specs/email.md."""

    type: Literal["email"]
    asgi: EmailScopeAsgi
    server: Sequence[str | int]
    hostname: str
    reply_channel: str


EmailReceivedEvent = TypedDict(
    "EmailReceivedEvent",
    {
        "type": Literal["email.received"],
        "mail_from": str,
        "rcpt_tos": Sequence[str],
        "peer": Sequence[str | int],
        "helo": str | None,
        "auth_user": str | None,
        "tls": bool,
        "size": int,
        "raw": NotRequired[bytes],
        "raw_stored_path": NotRequired[str],
        "subject": str,
        "from": str,
        "to": Sequence[str],
        "cc": Sequence[str],
        "date": str | None,
        "message_id": str | None,
        "headers": Sequence[Sequence[str]],
        "text": str | None,
        "html": str | None,
        "attachments": Sequence[Mapping[str, Any]],
    },
)
EmailReceivedEvent.__doc__ = """``email.received`` (gateway -> worker): specs/email.md."""


class HttpScopeAsgi(TypedDict):
    """The ``asgi`` of :class:`HttpScope`."""

    version: str
    spec_version: NotRequired[str]


class HttpScope(TypedDict):
    """``http`` scope: specs/http.md."""

    type: Literal["http"]
    asgi: HttpScopeAsgi
    http_version: str
    method: str
    scheme: NotRequired[str]
    path: str
    raw_path: NotRequired[bytes | None]
    query_string: bytes
    root_path: NotRequired[str]
    headers: Sequence[Sequence[bytes]]
    client: NotRequired[Sequence[str | int] | None]
    server: NotRequired[Sequence[str | int | None] | None]
    extensions: NotRequired[Mapping[str, Mapping[str, Any]]]
    reply_channel: str


class HttpDisconnectEvent(TypedDict):
    """``http.disconnect`` (gateway -> worker): specs/http.md."""

    type: Literal["http.disconnect"]


class HttpRequestEvent(TypedDict):
    """``http.request`` (gateway -> worker): specs/http.md."""

    type: Literal["http.request"]
    body: NotRequired[bytes]
    more_body: NotRequired[bool]


class HttpResponseBodyEvent(TypedDict):
    """``http.response.body`` (worker -> gateway): specs/http.md."""

    type: Literal["http.response.body"]
    body: NotRequired[bytes]
    more_body: NotRequired[bool]


class HttpResponseStartEvent(TypedDict):
    """``http.response.start`` (worker -> gateway): specs/http.md."""

    type: Literal["http.response.start"]
    status: int
    headers: NotRequired[Sequence[Sequence[bytes]]]
    trailers: NotRequired[bool]


class HttpResponseTrailersEvent(TypedDict):
    """``http.response.trailers`` (worker -> gateway): specs/http.md."""

    type: Literal["http.response.trailers"]
    headers: Sequence[Sequence[bytes]]
    more_trailers: NotRequired[bool]


class MqttScopeAsgi(TypedDict):
    """The ``asgi`` of :class:`MqttScope`."""

    version: str
    spec_version: NotRequired[str]


class MqttScope(TypedDict):
    """``mqtt`` scope: specs/mqtt.md."""

    type: Literal["mqtt"]
    asgi: MqttScopeAsgi
    broker: str
    client_id: str
    protocol_version: str
    reply_channel: str
    topic_filter: NotRequired[str]


class MqttMessageEventProperties(TypedDict):
    """The ``properties`` of :class:`MqttMessageEvent`."""

    payload_format_indicator: NotRequired[int]
    message_expiry_interval: NotRequired[int]
    content_type: NotRequired[str]
    response_topic: NotRequired[str]
    correlation_data: NotRequired[bytes]
    user_properties: NotRequired[Sequence[Sequence[str]]]
    subscription_identifiers: NotRequired[Sequence[int]]


class MqttMessageEvent(TypedDict):
    """``mqtt.message`` (gateway -> worker): specs/mqtt.md."""

    type: Literal["mqtt.message"]
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: MqttMessageEventProperties


class MqttPublishEventProperties(TypedDict):
    """The ``properties`` of :class:`MqttPublishEvent`."""

    payload_format_indicator: NotRequired[int]
    message_expiry_interval: NotRequired[int]
    content_type: NotRequired[str]
    response_topic: NotRequired[str]
    correlation_data: NotRequired[bytes]
    user_properties: NotRequired[Sequence[Sequence[str]]]


class MqttPublishEvent(TypedDict):
    """``mqtt.publish`` (worker -> gateway): specs/mqtt.md."""

    type: Literal["mqtt.publish"]
    topic: str
    payload: bytes | str
    qos: NotRequired[int]
    retain: NotRequired[bool]
    properties: NotRequired[MqttPublishEventProperties]


class MqttSubscribeEvent(TypedDict):
    """``mqtt.subscribe`` (worker -> gateway): specs/mqtt.md."""

    type: Literal["mqtt.subscribe"]
    topic: str
    qos: NotRequired[int]


class MqttUnsubscribeEvent(TypedDict):
    """``mqtt.unsubscribe`` (worker -> gateway): specs/mqtt.md."""

    type: Literal["mqtt.unsubscribe"]
    topic: str


class SmsScopeAsgi(TypedDict):
    """The ``asgi`` of :class:`SmsScope`."""

    version: str
    spec_version: NotRequired[str]


class SmsScope(TypedDict):
    """``sms`` scope: specs/sms.md."""

    type: Literal["sms"]
    asgi: SmsScopeAsgi
    path: str
    public_url: str
    reply_channel: str


SmsReceivedEvent = TypedDict(
    "SmsReceivedEvent",
    {
        "type": Literal["sms.received"],
        "from": str,
        "to": str,
        "body": str,
        "message_sid": str,
        "account_sid": str,
        "num_media": int,
        "media": Sequence[Mapping[str, str]],
        "params": Mapping[str, str],
    },
)
SmsReceivedEvent.__doc__ = """``sms.received`` (gateway -> worker): specs/sms.md."""


class SmsReplyEvent(TypedDict):
    """``sms.reply`` (worker -> gateway): specs/sms.md."""

    type: Literal["sms.reply"]
    body: NotRequired[str | None]
    media: NotRequired[Sequence[str]]


SmsSendEvent = TypedDict(
    "SmsSendEvent",
    {
        "type": Literal["sms.send"],
        "to": str,
        "body": NotRequired[str | None],
        "from": NotRequired[str | None],
        "messaging_service_sid": NotRequired[str | None],
        "media": NotRequired[Sequence[str]],
        "status_callback": NotRequired[str | None],
    },
)
SmsSendEvent.__doc__ = """``sms.send`` (worker -> gateway): specs/sms.md."""


SmsStatusEvent = TypedDict(
    "SmsStatusEvent",
    {
        "type": Literal["sms.status"],
        "message_sid": str,
        "status": str,
        "error_code": int | None,
        "to": NotRequired[str],
        "from": NotRequired[str],
        "params": Mapping[str, str],
    },
)
SmsStatusEvent.__doc__ = """``sms.status`` (gateway -> worker): specs/sms.md."""


class SwitchboardClaimEvent(TypedDict):
    """``switchboard.claim`` (worker -> gateway): specs/layer.md."""

    type: Literal["switchboard.claim"]
    worker: str


class SwitchboardDrainedEvent(TypedDict):
    """``switchboard.drained`` (worker -> gateway): specs/layer.md."""

    type: Literal["switchboard.drained"]
    worker: str


class SwitchboardEventEvent(TypedDict):
    """``switchboard.event`` (gateway -> worker): specs/layer.md."""

    type: Literal["switchboard.event"]
    connection: str
    scope: NotRequired[Mapping[str, Any]]
    event: Mapping[str, Any]
    claim: NotRequired[bool]
    epoch: NotRequired[int]
    trace: NotRequired[Mapping[str, str]]


class SwitchboardGroupAddEvent(TypedDict):
    """``switchboard.group_add`` (worker -> gateway): specs/layer.md."""

    type: Literal["switchboard.group_add"]
    group: str


class SwitchboardGroupDiscardEvent(TypedDict):
    """``switchboard.group_discard`` (worker -> gateway): specs/layer.md."""

    type: Literal["switchboard.group_discard"]
    group: str


class SwitchboardHeartbeatEvent(TypedDict):
    """``switchboard.heartbeat`` (worker -> gateway): specs/layer.md."""

    type: Literal["switchboard.heartbeat"]
    worker: str


class SwitchboardMarkEvent(TypedDict):
    """``switchboard.mark`` (worker -> gateway): specs/layer.md."""

    type: Literal["switchboard.mark"]
    at: float


class SwitchboardProbeEvent(TypedDict):
    """``switchboard.probe`` (gateway -> worker): specs/layer.md."""

    type: Literal["switchboard.probe"]
    sent: float


class SwitchboardReleaseEvent(TypedDict):
    """``switchboard.release`` (worker -> gateway): specs/layer.md."""

    type: Literal["switchboard.release"]
    worker: str


class SwitchboardReleasedEvent(TypedDict):
    """``switchboard.released`` (gateway -> worker): specs/layer.md."""

    type: Literal["switchboard.released"]
    gateway: str
    connections: NotRequired[Mapping[str, int]]


class SwitchboardScopeEvent(TypedDict):
    """``switchboard.scope`` (gateway -> worker): specs/layer.md."""

    type: Literal["switchboard.scope"]
    connection: str
    scope: NotRequired[Mapping[str, Any]]


class SwitchboardScopeRequestEvent(TypedDict):
    """``switchboard.scope_request`` (worker -> gateway): specs/layer.md."""

    type: Literal["switchboard.scope_request"]
    worker: str


class SwitchboardStatusEventLayer(TypedDict):
    """The ``layer`` of :class:`SwitchboardStatusEvent`."""

    sent: int
    received: int


class SwitchboardStatusEventGateway(TypedDict):
    """The ``gateway`` of :class:`SwitchboardStatusEvent`."""

    id: str
    events_in: int
    events_out: int
    held: int
    claimed: int
    claims: int
    workers_lost: int
    plugins: Sequence[str]
    protocols: NotRequired[Mapping[str, Mapping[str, int]]]
    refusals: NotRequired[Mapping[str, int]]
    plugin_protocols: NotRequired[Mapping[str, Sequence[str]]]


class SwitchboardStatusEventWorker(TypedDict):
    """The ``worker`` of :class:`SwitchboardStatusEvent`."""

    id: str
    events_in: int
    events_out: int | None
    instances: int
    queued: int
    claimed: int
    claims: int
    failed: int
    channels: NotRequired[Sequence[str]]
    handler_times: NotRequired[Mapping[str, Sequence[int]]]


class SwitchboardStatusEvent(TypedDict):
    """``switchboard.status`` (worker -> gateway): specs/layer.md."""

    type: Literal["switchboard.status"]
    id: str
    kind: str
    host: str
    pid: int
    started: float
    time: float
    state: str
    connections: Mapping[str, int]
    drops: Mapping[str, int]
    layer: SwitchboardStatusEventLayer
    version: NotRequired[str]
    cpu: NotRequired[float]
    rss: NotRequired[int]
    gateway: NotRequired[SwitchboardStatusEventGateway]
    worker: NotRequired[SwitchboardStatusEventWorker]


class SwitchboardStatusRequestEvent(TypedDict):
    """``switchboard.status.request`` (gateway -> worker): specs/layer.md."""

    type: Literal["switchboard.status.request"]
    reply_channel: str


class SwitchboardTapEventsEvent(TypedDict):
    """``switchboard.tap.events`` (worker -> gateway): specs/layer.md."""

    type: Literal["switchboard.tap.events"]
    tap: str
    source: str
    events: Sequence[Mapping[str, Any]]
    skipped: int


class SwitchboardTapRequestEvent(TypedDict):
    """``switchboard.tap.request`` (gateway -> worker): specs/layer.md."""

    type: Literal["switchboard.tap.request"]
    reply_channel: str
    tap: str
    protocol: NotRequired[str]
    channel: NotRequired[str]
    until: float


class SwitchboardWorkerStoppingEvent(TypedDict):
    """``switchboard.worker_stopping`` (worker -> gateway): specs/layer.md."""

    type: Literal["switchboard.worker_stopping"]
    worker: str


class UdpScopeAsgi(TypedDict):
    """The ``asgi`` of :class:`UdpScope`."""

    version: str
    spec_version: NotRequired[str]


class UdpScope(TypedDict):
    """``udp`` scope: specs/udp.md."""

    type: Literal["udp"]
    asgi: UdpScopeAsgi
    server: Sequence[str | int]
    reply_channel: str


class UdpDatagramEvent(TypedDict):
    """``udp.datagram`` (gateway -> worker): specs/udp.md."""

    type: Literal["udp.datagram"]
    data: bytes
    client: Sequence[str | int]


class UdpSendEvent(TypedDict):
    """``udp.send`` (worker -> gateway): specs/udp.md."""

    type: Literal["udp.send"]
    data: bytes
    address: Sequence[str | int]


class WebrtcScopeAsgi(TypedDict):
    """The ``asgi`` of :class:`WebrtcScope`."""

    version: str
    spec_version: NotRequired[str]


class WebrtcScope(TypedDict):
    """``webrtc`` scope: specs/webrtc.md."""

    type: Literal["webrtc"]
    asgi: WebrtcScopeAsgi
    path: str
    root_path: NotRequired[str]
    query_string: NotRequired[bytes]
    headers: Sequence[Sequence[bytes]]
    client: NotRequired[Sequence[str | int] | None]
    reply_channel: str


class WebrtcCloseEvent(TypedDict):
    """``webrtc.close`` (worker -> gateway): specs/webrtc.md."""

    type: Literal["webrtc.close"]


class WebrtcConnectEvent(TypedDict):
    """``webrtc.connect`` (gateway -> worker): specs/webrtc.md."""

    type: Literal["webrtc.connect"]


class WebrtcDatachannelCloseEvent(TypedDict):
    """``webrtc.datachannel.close`` (gateway -> worker): specs/webrtc.md."""

    type: Literal["webrtc.datachannel.close"]
    label: str


class WebrtcDatachannelMessageEvent(TypedDict):
    """``webrtc.datachannel.message`` (gateway -> worker): specs/webrtc.md."""

    type: Literal["webrtc.datachannel.message"]
    label: str
    text: NotRequired[str | None]
    bytes: NotRequired[bytes | None]


class WebrtcDatachannelOpenEvent(TypedDict):
    """``webrtc.datachannel.open`` (gateway -> worker): specs/webrtc.md."""

    type: Literal["webrtc.datachannel.open"]
    label: str
    id: int | None
    protocol: NotRequired[str]


class WebrtcDatachannelSendEvent(TypedDict):
    """``webrtc.datachannel.send`` (worker -> gateway): specs/webrtc.md."""

    type: Literal["webrtc.datachannel.send"]
    label: str
    text: NotRequired[str | None]
    bytes: NotRequired[bytes | None]


class WebrtcDisconnectEvent(TypedDict):
    """``webrtc.disconnect`` (gateway -> worker): specs/webrtc.md."""

    type: Literal["webrtc.disconnect"]
    reason: str


class WebsocketScopeAsgi(TypedDict):
    """The ``asgi`` of :class:`WebsocketScope`."""

    version: str
    spec_version: NotRequired[str]


class WebsocketScope(TypedDict):
    """``websocket`` scope: specs/websocket.md."""

    type: Literal["websocket"]
    asgi: WebsocketScopeAsgi
    http_version: NotRequired[str]
    scheme: NotRequired[str]
    path: str
    raw_path: NotRequired[bytes | None]
    query_string: NotRequired[bytes]
    root_path: NotRequired[str]
    headers: Sequence[Sequence[bytes]]
    client: NotRequired[Sequence[str | int] | None]
    server: NotRequired[Sequence[str | int | None] | None]
    subprotocols: NotRequired[Sequence[str]]
    extensions: NotRequired[Mapping[str, Mapping[str, Any]]]
    reply_channel: str
    resumed: NotRequired[bool]


class WebsocketAcceptEvent(TypedDict):
    """``websocket.accept`` (worker -> gateway): specs/websocket.md."""

    type: Literal["websocket.accept"]
    subprotocol: NotRequired[str | None]
    headers: NotRequired[Sequence[Sequence[bytes]]]


class WebsocketCloseEvent(TypedDict):
    """``websocket.close`` (worker -> gateway): specs/websocket.md."""

    type: Literal["websocket.close"]
    code: NotRequired[int]
    reason: NotRequired[str | None]


class WebsocketConnectEvent(TypedDict):
    """``websocket.connect`` (gateway -> worker): specs/websocket.md."""

    type: Literal["websocket.connect"]


class WebsocketDisconnectEvent(TypedDict):
    """``websocket.disconnect`` (gateway -> worker): specs/websocket.md."""

    type: Literal["websocket.disconnect"]
    code: int
    reason: NotRequired[str | None]


class WebsocketHttpResponseBodyEvent(TypedDict):
    """``websocket.http.response.body`` (worker -> gateway): specs/websocket.md."""

    type: Literal["websocket.http.response.body"]
    body: NotRequired[bytes]
    more_body: NotRequired[bool]


class WebsocketHttpResponseStartEvent(TypedDict):
    """``websocket.http.response.start`` (worker -> gateway): specs/websocket.md."""

    type: Literal["websocket.http.response.start"]
    status: int
    headers: NotRequired[Sequence[Sequence[bytes]]]


class WebsocketReceiveEvent(TypedDict):
    """``websocket.receive`` (gateway -> worker): specs/websocket.md."""

    type: Literal["websocket.receive"]
    bytes: NotRequired[bytes | None]
    text: NotRequired[str | None]


class WebsocketSendEvent(TypedDict):
    """``websocket.send`` (worker -> gateway): specs/websocket.md."""

    type: Literal["websocket.send"]
    bytes: NotRequired[bytes | None]
    text: NotRequired[str | None]


EmailToWorker = EmailReceivedEvent
HttpToGateway = HttpResponseBodyEvent | HttpResponseStartEvent | HttpResponseTrailersEvent
HttpToWorker = HttpDisconnectEvent | HttpRequestEvent
MqttToGateway = MqttPublishEvent | MqttSubscribeEvent | MqttUnsubscribeEvent
MqttToWorker = MqttMessageEvent
SmsToGateway = SmsReplyEvent | SmsSendEvent
SmsToWorker = SmsReceivedEvent | SmsStatusEvent
SwitchboardToGateway = (
    SwitchboardClaimEvent
    | SwitchboardDrainedEvent
    | SwitchboardGroupAddEvent
    | SwitchboardGroupDiscardEvent
    | SwitchboardHeartbeatEvent
    | SwitchboardMarkEvent
    | SwitchboardReleaseEvent
    | SwitchboardScopeRequestEvent
    | SwitchboardStatusEvent
    | SwitchboardTapEventsEvent
    | SwitchboardWorkerStoppingEvent
)
SwitchboardToWorker = (
    SwitchboardEventEvent
    | SwitchboardProbeEvent
    | SwitchboardReleasedEvent
    | SwitchboardScopeEvent
    | SwitchboardStatusRequestEvent
    | SwitchboardTapRequestEvent
)
UdpToGateway = UdpSendEvent
UdpToWorker = UdpDatagramEvent
WebrtcToGateway = WebrtcCloseEvent | WebrtcDatachannelSendEvent
WebrtcToWorker = (
    WebrtcConnectEvent
    | WebrtcDatachannelCloseEvent
    | WebrtcDatachannelMessageEvent
    | WebrtcDatachannelOpenEvent
    | WebrtcDisconnectEvent
)
WebsocketToGateway = (
    WebsocketAcceptEvent
    | WebsocketCloseEvent
    | WebsocketHttpResponseBodyEvent
    | WebsocketHttpResponseStartEvent
    | WebsocketSendEvent
)
WebsocketToWorker = WebsocketConnectEvent | WebsocketDisconnectEvent | WebsocketReceiveEvent
