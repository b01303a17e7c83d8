"""The bare MQTT baseline: one paho subscriber (QoS 1, persistent session) recording each message."""

from __future__ import annotations

import argparse
import signal
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from durable_site.recorder import record
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--client-id", required=True)
    args = parser.parse_args()
    url = urlsplit(args.broker)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=args.client_id, clean_session=False)

    def on_connect(client: paho.Client, *rest: Any) -> None:
        client.subscribe(f"{args.prefix}/#", qos=1)

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        record(message.payload.decode(), 0.0, time.time())

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(url.hostname or "127.0.0.1", url.port or 1883)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
