"""Testing helpers with Channels' API, and one communicator per Switchboard protocol.

* :class:`ApplicationCommunicator`, :class:`HttpCommunicator`, :class:`WebsocketCommunicator`
  — Channels' communicators (``channels.testing``), safe inside Django's ``TestCase``.
* :class:`UdpCommunicator`, :class:`MqttCommunicator`, :class:`EmailCommunicator`,
  :class:`SmsCommunicator`, :class:`WebRTCCommunicator` — run a consumer of that protocol
  as a gateway would, with spec-valid scopes and events, checking what it sends against
  ``switchboard/specs/`` (:mod:`switchboard.testing.protocols`).
* :class:`SwitchboardLiveServerTestCase` (also ``ChannelsLiveServerTestCase``) — a real
  gateway and worker on a free port for browser and outside-client tests.
"""

from typing import Any

from .application import ApplicationCommunicator
from .http import HttpCommunicator
from .protocols import (
    EmailCommunicator,
    MqttCommunicator,
    ProtocolCommunicator,
    SmsCommunicator,
    UdpCommunicator,
    WebRTCCommunicator,
)
from .websocket import WebsocketCommunicator

__all__ = [
    "ApplicationCommunicator",
    "ChannelsLiveServerTestCase",
    "EmailCommunicator",
    "HttpCommunicator",
    "MqttCommunicator",
    "ProtocolCommunicator",
    "SmsCommunicator",
    "SwitchboardLiveServerTestCase",
    "UdpCommunicator",
    "WebRTCCommunicator",
    "WebsocketCommunicator",
]


def __getattr__(name: str) -> Any:
    # The live server imports django.test (and needs settings) only when asked for.
    if name in ("SwitchboardLiveServerTestCase", "ChannelsLiveServerTestCase"):
        from . import live

        return getattr(live, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
