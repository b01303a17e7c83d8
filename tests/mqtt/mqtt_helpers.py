"""Helpers for the MQTT tests: a real paho test client, a private Mosquitto, polling.

Kept out of conftest.py so test modules can import them by a name unique to this
directory (``mqtt_helpers``) without clashing with other test directories' conftests.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from support.processes import ProcessDeployment, process_env
from support.waiting import deadline

BROKER_HOST = "127.0.0.1"
BROKER_PORT = int(os.environ.get("SWITCHBOARD_TEST_MQTT_PORT", "1883"))
WAIT = deadline(10)  # a safety net (scaled by the suite-wide knob): a broken path fails instead of hanging


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def mosquitto_reachable() -> bool:
    return port_open(BROKER_PORT, BROKER_HOST)


def unique_prefix() -> str:
    """A topic prefix no other test (or parallel run) uses."""
    return f"sb-test-{secrets.token_hex(4)}"


class MqttTestClient:
    """A plain paho client in its own thread: what a device or a script would be.

    Subscriptions are re-sent on every connect, so the client follows a broker restart.
    Received messages wait in a thread-safe queue; async tests read it with :meth:`aget`.
    """

    def __init__(self, port: int = BROKER_PORT, *, version: int = 4) -> None:
        self.port = port
        self.protocol = paho.MQTTv5 if version == 5 else paho.MQTTv311
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._subscriptions: dict[str, int] = {}
        self._acks: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"sb-test-client-{secrets.token_hex(4)}",
            protocol=self.protocol,
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.connected.clear()
        self.client.on_message = lambda client, userdata, message: self.messages.put(message)
        self.client.on_subscribe = self._on_ack
        self.client.on_unsubscribe = self._on_ack

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            return
        with self._lock:
            subscriptions = list(self._subscriptions.items())
        if subscriptions:
            client.subscribe(subscriptions)
        self.connected.set()

    def _on_ack(self, client: paho.Client, userdata: Any, mid: int, *rest: Any) -> None:
        with self._lock:
            event = self._acks.setdefault(mid, threading.Event())
        event.set()

    def _wait_ack(self, mid: int | None, what: str) -> None:
        assert mid is not None, f"{what}: not connected"
        with self._lock:
            event = self._acks.setdefault(mid, threading.Event())
        assert event.wait(WAIT), f"{what}: no acknowledgement from the broker"

    def connect(self) -> MqttTestClient:
        self.client.connect_async(BROKER_HOST, self.port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(WAIT), f"test client cannot connect to 127.0.0.1:{self.port}"
        return self

    def subscribe(self, topic: str, qos: int = 0) -> None:
        with self._lock:
            self._subscriptions[topic] = qos
        _, mid = self.client.subscribe(topic, qos)
        self._wait_ack(mid, f"subscribe {topic}")

    def unsubscribe(self, topic: str) -> None:
        with self._lock:
            self._subscriptions.pop(topic, None)
        _, mid = self.client.unsubscribe(topic)
        self._wait_ack(mid, f"unsubscribe {topic}")

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False, properties: Properties | None = None
    ) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if qos:
            info.wait_for_publish(WAIT)

    def get(self, timeout: float = WAIT) -> paho.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no MQTT message within {timeout}s") from None

    async def aget(self, timeout: float = WAIT) -> paho.MQTTMessage:
        return await asyncio.to_thread(self.get, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish_until_reply(
    client: MqttTestClient, topic: str, payload: bytes | str, timeout: float = 10, every: float = 0.2
) -> paho.MQTTMessage:
    """Publish, then again every ``every`` seconds, until a message arrives; return it.

    For subscriptions whose SUBACK the test cannot observe (a gateway subscribing after a
    broker restart, a consumer's runtime subscribe): the first publish the broker routes
    gets answered. Later duplicates may still arrive; callers must not count replies.
    ``timeout`` is in unscaled seconds, as for :func:`support.waiting.wait_until`.
    """
    limit = deadline(timeout)
    end = time.monotonic() + limit
    while time.monotonic() < end:
        client.publish(topic, payload)
        try:
            return client.messages.get(timeout=every)
        except queue.Empty:
            continue
    raise AssertionError(f"no reply to publishes on {topic} within {limit:.1f}s")


async def apublish_until_reply(
    client: MqttTestClient, topic: str, payload: bytes | str, timeout: float = 10
) -> paho.MQTTMessage:
    return await asyncio.to_thread(publish_until_reply, client, topic, payload, timeout)


# -- end-to-end deployments (real OS processes) ----------------------------------------------

HERE = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Deployment(ProcessDeployment):
    """``switchboard gateway`` + ``worker`` over Redis (``split``) or ``switchboard run``.

    Processes log to files in ``log_dir``; :meth:`logs` shows them when a test fails.
    """

    settings_module = "mqtt_e2e_settings"

    def __init__(self, mode: str, broker_url: str, prefix: str, log_dir: Path) -> None:
        self.mode = mode
        self.prefix = prefix
        self.broker_port = int(broker_url.rsplit(":", 1)[1])
        self.log_dir = log_dir
        self.cwd = log_dir  # type: ignore[misc]  # per deployment: its processes run beside their logs
        self.stats_file = log_dir / "mqtt-stats.json"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        env = process_env([HERE], SB_MQTT_BROKER=broker_url, SB_MQTT_PREFIX=prefix, SB_MQTT_STATS=str(self.stats_file))
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env.pop("SWITCHBOARD_REDIS_URL", None)
        if mode == "split":
            env["SWITCHBOARD_REDIS_URL"] = REDIS_URL
            env["SWITCHBOARD_REDIS_PREFIX"] = f"{prefix}:"
        self.env = env

    def start_all(self) -> None:
        if self.mode == "split":
            self.start("gateway", "gateway")
            self.start("worker", "worker")
        else:
            self.start("run", "run")

    @property
    def gateway_name(self) -> str:
        return "gateway" if self.mode == "split" else "run"

    def wait_online(self, port: int = BROKER_PORT) -> None:
        """Wait for the gateway's retained ``online`` status: connected and subscribed."""
        client = MqttTestClient(port).connect()
        try:
            client.subscribe(f"{self.prefix}/status")
            end = time.monotonic() + deadline(30)
            while time.monotonic() < end:
                self.check_alive()
                try:
                    message = client.messages.get(timeout=0.2)
                except queue.Empty:
                    continue
                if message.payload == b"online":
                    client.publish(f"{self.prefix}/status", b"", qos=1, retain=True)  # leave no retained message
                    return
            raise AssertionError(f"the gateway never announced itself online\n{self.logs()}")
        finally:
            client.close()

    def stop_all(self) -> None:
        """SIGTERM everything first, so the processes shut down in parallel."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name in list(self.processes):
            self.stop(name)

    def gateway_stats(self) -> dict[str, int]:
        """Stop the gateway process and read the counters its MQTT plugin wrote."""
        self.stop(self.gateway_name)
        assert self.stats_file.exists(), f"no stats file written\n{self.logs()}"
        stats: dict[str, int] = json.loads(self.stats_file.read_text())
        return stats
