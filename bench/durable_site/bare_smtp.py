"""The bare SMTP baseline: aiosmtpd accepting every mail (250) and recording it, no layer."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from email import message_from_bytes
from typing import Any

from aiosmtpd.controller import Controller
from durable_site.recorder import record


class Handler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content or b"")
        record(message.get("Message-ID"), 0.0, time.time())
        return "250 Message accepted"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    controller = Controller(Handler(), hostname="127.0.0.1", port=args.port)
    controller.start()
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(stop.wait())
    controller.stop()


if __name__ == "__main__":
    main()
