"""Consumers of the fault tests: they record each run in PostgreSQL (sync, in Django's thread)."""

from __future__ import annotations

import os
import time
from typing import Any

from switchboard.consumers import SyncConsumer, delivery_of, idempotent
from switchboard.consumers.durable import Delivery
from switchboard.consumers.email import SyncEmailConsumer
from switchboard.consumers.mqtt import SyncMqttConsumer
from switchboard.consumers.sms import IncomingSms, SyncSmsConsumer

from .models import Handling, TaskEffect


def record(kind: str, key: str, message: dict[str, Any] | None = None, delivery: Delivery | None = None) -> None:
    delivery = delivery or (delivery_of(message) if message is not None else None)
    assert delivery is not None, f"{kind} {key} did not come from a durable channel"
    Handling.objects.create(kind=kind, key=key, event_id=delivery.event_id, delivery=delivery.count, pid=os.getpid())


class MailRecorder(SyncEmailConsumer):
    def email_received(self, message: dict[str, Any]) -> None:
        time.sleep(0.002)  # some work, so a kill lands mid-handler now and then
        record("email", message.get("message_id") or "", message)


class MqttRecorder(SyncMqttConsumer):
    def mqtt_message(self, message: dict[str, Any]) -> None:
        record("mqtt", message["payload"].decode(), message)


class SmsRecorder(SyncSmsConsumer):
    def message_received(self, sms: IncomingSms) -> None:
        record("sms", sms.message_sid, delivery=sms.delivery)
        self.reply(f"got {sms.body}")


class TaskRunner(SyncConsumer):
    def task_run(self, message: dict[str, Any]) -> None:
        flag = os.environ.get("DURABLE_POISON_FLAG")
        if message.get("poison") and flag and os.path.exists(flag):
            raise RuntimeError(f"poisoned task {message['n']}")
        time.sleep(0.002)
        record("task", str(message["n"]), message)
        self.do_work(message)

    @idempotent
    def do_work(self, message: dict[str, Any]) -> None:
        TaskEffect.objects.create(key=str(message["n"]))
