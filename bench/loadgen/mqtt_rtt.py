"""MQTT request/reply load through the broker: a window of N requests in flight.

One paho client (its network loop in paho's own thread, as a device or service would run
it) publishes each request to ``<prefix>/req/<slot>`` (QoS 0) and is subscribed to
``<prefix>/resp/+``, where the server under test answers with the same payload. The
answer to a request sends the slot's next one straight from paho's ``on_message``
callback. Two measurements, one server start: ``x1`` and ``xN`` (bench.loadgen.windowed).

The broker's CPU in each counted window is read from ``/proc`` (the process listening on
the broker port, when it is visible from here) and reported as ``broker_cpu_s``.

Run as ``python -m bench.loadgen.mqtt_rtt --prefix bench-xyz``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.loadgen.common import emit, run
from bench.loadgen.windowed import Window, measure, phases, wait_ready
from bench.plugins_site.common import mqtt_reply_topic, mqtt_request_topic

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def broker_pid(port: int) -> int | None:
    """The pid of the process listening on ``port`` (None if it is not visible from here)."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except OSError:
            continue
    return None


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


async def main(args: argparse.Namespace) -> None:
    url = urlsplit(args.broker)
    host, port = url.hostname or "127.0.0.1", url.port or 1883
    lock = threading.Lock()
    connected = threading.Event()
    subscribed = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-load-{secrets.token_hex(4)}", protocol=paho.MQTTv311)
    prefix: str = args.prefix

    def send(slot: int, payload: bytes) -> None:
        info = client.publish(mqtt_request_topic(prefix, slot), payload, qos=0)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish failed: {paho.error_string(info.rc)}")

    window = Window(send, size=args.size, lost_after=args.lost_after, max_sends=args.max_sends, lock=lock)

    def on_connect(client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if not reason.is_failure:
            client.subscribe(mqtt_reply_topic(prefix, "+"), 0)
            connected.set()

    client.on_connect = on_connect
    client.on_subscribe = lambda *unused: subscribed.set()
    client.on_message = lambda client, userdata, message: window.on_reply(message.payload)
    client.connect_async(host, port, keepalive=60)
    client.loop_start()
    try:
        if not (connected.wait(10) and subscribed.wait(10)):
            print(f"mqtt_rtt: cannot connect and subscribe to {host}:{port}", file=sys.stderr)
            sys.exit(2)
        if not await wait_ready(window, args.ready_timeout):
            print(f"mqtt_rtt: no reply on {mqtt_reply_topic(prefix, '+')} within {args.ready_timeout}s", file=sys.stderr)
            sys.exit(2)
        pid = broker_pid(port)

        def probe() -> dict[str, float]:
            return {"broker_cpu_s": cpu_seconds(pid) if pid else float("nan")}

        rows = [await measure(window, label, slots, warmup, duration, probe)
                for label, slots, warmup, duration in phases(args.window, args.warmup, args.duration)]
    finally:
        client.disconnect()
        client.loop_stop()
    emit("result", data={"rows": rows, "window": args.window, "size": args.size, "broker_pid": pid})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--prefix", required=True, help="topic prefix of this run (requests and replies below it)")
    parser.add_argument("--window", type=int, default=50, help="requests in flight in the xN measurement")
    parser.add_argument("--size", type=int, default=64, help="payload bytes")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--lost-after", type=float, default=2.0)
    parser.add_argument("--ready-timeout", type=float, default=30.0)
    parser.add_argument("--max-sends", type=int, default=5_000_000, help="cap on requests per measurement")
    args = parser.parse_args(argv)
    if not args.broker.startswith(("mqtt://127.", "mqtt://localhost")):
        parser.error("load goes to this machine only")
    return args


if __name__ == "__main__":
    run(main(parse_args()))
