"""``switchboard deadletters list | show | replay | drop``: the dead letters of durable channels.

A message whose handler raised ``max_deliveries`` times (or whose workers died on it that
often) is moved to its channel's dead letters (specs/layer.md, Durable channels). This
command reaches them through the same layer configuration as the processes:

* ``list``: channels with dead letters and how many; with a channel, its dead letters
  (id, when, deliveries, message type, the error's last line);
* ``show CHANNEL ID``: one dead letter in full: the error with its traceback, the message;
* ``replay CHANNEL ID... | --all``: store them on the channel again, for the workers (same
  event id, so idempotent consumers recognise them; delivery count from 1 again);
* ``drop CHANNEL ID... | --all``: delete them.

``--json`` prints machine-readable output (bytes as ``{"$bytes": "<base64>"}``).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import sys
from collections.abc import Sequence
from typing import IO, Any

from .layers import ChannelLayer
from .layers.durable import DeadLetter

#: Dead letters ``list CHANNEL`` shows unless ``--limit`` says otherwise.
DEFAULT_LIMIT = 50


def add_parser(sub: Any, common: Any) -> None:
    """Add ``deadletters`` and its four actions to the CLI's subcommands.

    ``common(parser)`` adds the options every command takes (``--settings``, ``--config``...).
    """
    parser = sub.add_parser("deadletters", help="list, show, replay or drop dead letters of durable channels")
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="channels with dead letters; with CHANNEL, its dead letters")
    listing.add_argument("channel", nargs="?")
    listing.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"most dead letters shown (default {DEFAULT_LIMIT})")
    listing.add_argument("--after", help="show those after this id (paging)")
    show = actions.add_parser("show", help="one dead letter in full")
    show.add_argument("channel")
    show.add_argument("id")
    for name, text in (("replay", "store dead letters on their channel again"), ("drop", "delete dead letters")):
        action = actions.add_parser(name, help=text)
        action.add_argument("channel")
        action.add_argument("ids", nargs="*", metavar="ID")
        action.add_argument("--all", action="store_true", help="every dead letter of the channel")
    for action in (listing, show, *(actions.choices[name] for name in ("replay", "drop"))):
        common(action)
        action.add_argument("--json", action="store_true", help="machine-readable output")


def _plain(value: Any) -> Any:
    """A message made JSON-safe: bytes as ``{"$bytes": base64}``."""
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _message_or_error(letter: DeadLetter) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return letter.message, None
    except Exception as exc:
        return None, f"undecodable ({exc!r})"


def _as_dict(letter: DeadLetter) -> dict[str, Any]:
    message, problem = _message_or_error(letter)
    return {
        "id": letter.id,
        "channel": letter.channel,
        "event_id": letter.event_id,
        "deliveries": letter.deliveries,
        "failed_at": letter.failed_at,
        "error": letter.error,
        "message": _plain(message) if problem is None else None,
        "message_error": problem,
    }


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


async def run_deadletters(layer: ChannelLayer, args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """Carry out one ``deadletters`` action; the process exit code."""
    out = out or sys.stdout
    durable = layer.durable
    action = args.action
    if action == "list" and not args.channel:
        channels = await durable.dead_letter_channels()
        if args.json:
            print(json.dumps({"channels": channels}, sort_keys=True), file=out)
        elif not channels:
            print("no dead letters", file=out)
        else:
            width = max(len("CHANNEL"), *map(len, channels))
            print(f"{'CHANNEL':<{width}}  DEAD", file=out)
            for channel, count in sorted(channels.items()):
                print(f"{channel:<{width}}  {count}", file=out)
        return 0
    channel = args.channel
    if durable.options_for(channel) is None:
        print(f"switchboard: {channel!r} is not a durable channel (LAYER.CONFIG.durable)", file=sys.stderr)
        return 2
    if action == "list":
        start = f"({args.after}" if args.after else None
        letters = await durable.dead_letters(channel, start=start, count=max(1, args.limit))
        if args.json:
            print(json.dumps({"channel": channel, "dead_letters": [_as_dict(letter) for letter in letters]}), file=out)
            return 0
        if not letters:
            print(f"no dead letters on {channel}", file=out)
            return 0
        print(f"{'ID':<20}  {'FAILED AT':<23}  {'N':>3}  {'TYPE':<24}  ERROR", file=out)
        for letter in letters:
            message, problem = _message_or_error(letter)
            kind = str(message.get("type", "-")) if message is not None else "(undecodable)"
            if kind == "switchboard.event" and message is not None and isinstance(message.get("event"), dict):
                kind = str(message["event"].get("type", kind))
            print(
                f"{letter.id:<20}  {_when(letter.failed_at):<23}  {letter.deliveries:>3}  {kind[:24]:<24}  "
                f"{_last_line(letter.error)[:100]}",
                file=out,
            )
        if len(letters) >= args.limit:
            print(f"(first {args.limit}; more with --after {letters[-1].id})", file=out)
        return 0
    if action == "show":
        found = await durable.dead_letter(channel, args.id)
        if found is None:
            print(f"switchboard: no dead letter {args.id} on {channel}", file=sys.stderr)
            return 1
        letter = found
        if args.json:
            print(json.dumps(_as_dict(letter)), file=out)
            return 0
        message, problem = _message_or_error(letter)
        print(f"id:          {letter.id}", file=out)
        print(f"channel:     {letter.channel}", file=out)
        print(f"event id:    {letter.event_id}", file=out)
        print(f"deliveries:  {letter.deliveries}", file=out)
        print(f"failed at:   {_when(letter.failed_at)}", file=out)
        print("error:", file=out)
        for line in letter.error.rstrip().splitlines():
            print(f"  {line}", file=out)
        print("message:", file=out)
        text = problem if message is None else json.dumps(_plain(message), indent=2, ensure_ascii=False)
        for line in str(text).splitlines():
            print(f"  {line}", file=out)
        return 0
    ids: Sequence[str] | None = None if args.all else list(args.ids)
    if ids is not None and not ids:
        print(
            f"switchboard: name the dead letters to {action} (ids from `deadletters list {channel}`) or pass --all",
            file=sys.stderr,
        )
        return 2
    if action == "replay":
        replayed, refused = await durable.replay(channel, ids)
        if args.json:
            print(json.dumps({"replayed": replayed, "refused_full": refused}), file=out)
        else:
            print(f"replayed {replayed} dead letter(s) onto {channel}", file=out)
            if refused:
                print(f"{refused} not replayed: {channel} is full (they stay dead letters; try again later)", file=out)
        return 1 if refused else 0
    dropped = await durable.drop(channel, ids)
    if args.json:
        print(json.dumps({"dropped": dropped}), file=out)
    else:
        print(f"dropped {dropped} dead letter(s) of {channel}", file=out)
    return 0
