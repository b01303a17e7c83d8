"""The benchmark's Switchboard consumers: tasks (no-op and 10 ms), mails and MQTT messages."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from switchboard.consumers import AsyncConsumer

from .recorder import record


class TaskConsumer(AsyncConsumer):
    async def task_noop(self, message: dict[str, Any]) -> None:
        record(message["n"], message["sent"], time.time())

    async def task_sleep(self, message: dict[str, Any]) -> None:
        started = time.time()
        await asyncio.sleep(0.01)  # a 10 ms task: I/O-bound work
        record(message["n"], message["sent"], started)


class MailConsumer(AsyncConsumer):
    async def email_received(self, message: dict[str, Any]) -> None:
        record(message.get("message_id"), 0.0, time.time())


class MqttConsumer(AsyncConsumer):
    async def mqtt_message(self, message: dict[str, Any]) -> None:
        record(message["payload"].decode(), 0.0, time.time())
