"""The UDP baseline: an asyncio ``DatagramProtocol`` that sends every datagram back.

On uvloop, as the Switchboard gateway runs (``switchboard`` picks uvloop when installed),
so the difference to the ``udp`` plugin is the plugin, the layer and the worker, not the
event loop. Run as ``python -m plugins_site.bare_udp --bind 127.0.0.1:9999``; stops on
SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)


async def main(bind: str) -> None:
    host, _, port = bind.rpartition(":")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=(host, int(port)))
    try:
        await stop.wait()
    finally:
        transport.close()


def run(bind: str) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(bind))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(bind))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", required=True, help="host:port")
    run(parser.parse_args().bind)
