"""Routing for the line-protocol OS-process tests: the scope type ``line`` to the test echo."""

from lineproto_consumers import EchoConsumer

from switchboard.consumers import ProtocolTypeRouter

application = ProtocolTypeRouter({"line": EchoConsumer.as_asgi()})
