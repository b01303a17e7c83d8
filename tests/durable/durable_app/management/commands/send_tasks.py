"""``send_tasks --count N [--start S] [--poison]``: tasks sent as a management command would.

Each ``channel_layer.send`` to the durable ``tasks`` channel returns once the task is
stored; ``async_to_sync`` works from here as from a view. Prints one line per 100 sent.
"""

from typing import Any

from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand, CommandParser

from switchboard.consumers import get_channel_layer


class Command(BaseCommand):
    help = "Send numbered tasks to the durable channel 'tasks'."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--start", type=int, default=0)
        parser.add_argument("--poison", action="store_true", help="one poison task after the others")

    def handle(self, *args: Any, count: int, start: int, poison: bool, **options: Any) -> None:
        layer = get_channel_layer()
        send = async_to_sync(layer.send)
        for number in range(start, start + count):
            send("tasks", {"type": "task.run", "n": number})
            if (number - start + 1) % 100 == 0:
                self.stdout.write(f"sent {number - start + 1}", ending="\n")
                self.stdout.flush()
        if poison:
            send("tasks", {"type": "task.run", "n": "poison", "poison": True})
        self.stdout.write(f"done {count}")
