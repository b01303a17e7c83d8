"""Channels' import path ``channels.generic.websocket`` (see :mod:`switchboard.consumers.websocket`)."""

from switchboard.consumers.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)

__all__ = ["AsyncJsonWebsocketConsumer", "AsyncWebsocketConsumer", "JsonWebsocketConsumer", "WebsocketConsumer"]
