"""The plugin's own spec: loaded by the gateway, typed beside it, and found through the entry point."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest
import switchboard_lineproto
from switchboard_lineproto import LinePlugin

from switchboard.gateway.plugins import ENTRY_POINT_GROUP, build_plugins, load_plugin_class
from switchboard.gateway.spec_typing import main as spec_typing_main
from switchboard.gateway.spec_typing import render_file
from switchboard.gateway.specs import (
    GATEWAY_TO_WORKER,
    WORKER_TO_GATEWAY,
    SpecError,
    parse_spec_markdown,
    spec_for,
    validate_message,
    validate_scope,
)

PACKAGE = Path(switchboard_lineproto.__file__).resolve().parent
SPEC = PACKAGE / "lineproto.md"


def test_the_typed_messages_agree_with_the_spec() -> None:
    """messages.py is what spec_typing makes of lineproto.md today (regenerate it if not)."""
    assert (PACKAGE / "messages.py").read_text(encoding="utf-8") == render_file(SPEC)
    assert spec_typing_main(["--spec", str(SPEC), "--output", str(PACKAGE / "messages.py"), "--check"]) == 0


def test_every_example_of_the_spec_is_valid() -> None:
    blocks = parse_spec_markdown(SPEC.read_text(encoding="utf-8"), "lineproto.md")
    assert {block.type for block in blocks} == {"line", "line.connect", "line.received", "line.send", "line.close",
                                                "line.disconnect"}
    for block in blocks:
        for example in block.examples:
            block.validate(example)


def test_building_the_plugin_teaches_the_validators_its_spec(installed: None) -> None:
    build_plugins({"lineproto": {"bind": ["127.0.0.1:0"]}})
    assert spec_for("line.send").source.startswith("switchboard_lineproto/lineproto.md:")
    validate_message({"type": "line.send", "text": "hi"}, direction=WORKER_TO_GATEWAY)
    validate_message({"type": "line.disconnect", "reason": "idle_timeout"}, direction=GATEWAY_TO_WORKER)
    with pytest.raises(SpecError, match=r"line.disconnect: key 'reason' must be one of 'client_closed'"):
        validate_message({"type": "line.disconnect", "reason": "bored"})
    with pytest.raises(SpecError, match=r"line.received: travels gateway -> worker, not worker -> gateway"):
        validate_message({"type": "line.received", "text": "x"}, direction=WORKER_TO_GATEWAY)
    validate_scope({"type": "line", "asgi": {"version": "3.0"}, "server": ["127.0.0.1", 1], "client": ["127.0.0.1", 2],
                    "reply_channel": "gateway.a!b"})


def test_the_gateway_finds_the_plugin_through_its_entry_point(installed: None) -> None:
    (entry,) = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "lineproto"]
    assert entry.value == "switchboard_lineproto.plugin:LinePlugin"
    assert entry.dist is not None and entry.dist.name == "switchboard-lineproto"
    assert load_plugin_class("lineproto") is LinePlugin
    (plugin,) = build_plugins({"lineproto": {"bind": ["127.0.0.1:0"], "max_line_length": 80}})
    assert isinstance(plugin, LinePlugin) and plugin.options.max_line_length == 80
