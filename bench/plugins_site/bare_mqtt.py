"""The MQTT baseline: one paho client that answers ``<prefix>/req/<n>`` on ``<prefix>/resp/<n>``.

The same library, broker and QoS (0) as the ``mqtt`` plugin, with paho's network loop in
the main thread and the echo published straight from paho's ``on_message`` callback: the
least code a request/reply service on paho can be. Run as
``python -m plugins_site.bare_mqtt --broker mqtt://127.0.0.1:1883 --prefix bench-x``;
disconnects cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from plugins_site.common import mqtt_reply_topic, mqtt_request_topic


def main(broker: str, prefix: str) -> int:
    url = urlsplit(broker)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-bare-{secrets.token_hex(4)}", protocol=paho.MQTTv311)
    request_filter = mqtt_request_topic(prefix, "+")

    def on_connect(client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if not reason.is_failure:
            client.subscribe(request_filter, 0)

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        client.publish(mqtt_reply_topic(prefix, message.topic.rsplit("/", 1)[1]), message.payload, qos=0)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        client.disconnect()

    client.on_connect = on_connect
    client.on_message = on_message
    client.reconnect_delay_set(0.2, 1.0)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    client.connect(url.hostname or "127.0.0.1", url.port or 1883, keepalive=60)
    client.loop_forever(retry_first_connection=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args()
    sys.exit(main(args.broker, args.prefix))
