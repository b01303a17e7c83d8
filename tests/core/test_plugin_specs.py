"""A plugin's own spec (``ProtocolPlugin.spec``): added to the validators when the plugin is loaded.

What a third-party plugin relies on (examples/lineproto is the worked example): its spec
file, in its own package, is compiled into the same registry as the shipped specs; a
broken spec, a clash with a shipped type, or a scope type no spec describes stops start-up
with one ConfigError naming the plugin.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from switchboard.gateway import specs
from switchboard.gateway.config import ConfigError
from switchboard.gateway.plugins import ProtocolPlugin, check_plugin_spec
from switchboard.gateway.specs import SpecError, SpecFileError, add_spec_file, known_types, validate_message

DEMO_SPEC = """# Demo

```scope
type: demo
keys: {reply_channel: channel}
examples: [{reply_channel: "gateway.a!b"}]
```

```message
type: demo.say
direction: worker -> gateway
keys: {text: str}
examples: [{text: hi}]
```
"""


@pytest.fixture(autouse=True)
def added_files_restored() -> Iterator[None]:
    """Each test's added spec files are forgotten after it (the registry is per process)."""
    before = dict(specs._added_files)
    yield
    specs._added_files.clear()
    specs._added_files.update(before)
    specs.reload_specs()


@dataclass
class DemoOptions:
    bind: str = ""


def demo_plugin(spec: Path | None, scope_types: tuple[str, ...] = ("demo",)) -> type[ProtocolPlugin[Any]]:
    class DemoPlugin(ProtocolPlugin[DemoOptions]):
        name: ClassVar[str] = "demo"
        Options: ClassVar[type[Any]] = DemoOptions

    DemoPlugin.scope_types = scope_types
    DemoPlugin.spec = spec
    return DemoPlugin


def test_a_plugin_spec_is_validated_against_once_the_plugin_is_built(tmp_path: Path) -> None:
    spec = tmp_path / "demo.md"
    spec.write_text(DEMO_SPEC, encoding="utf-8")
    assert "demo.say" not in known_types()
    plugin = demo_plugin(spec)(DemoOptions())
    assert {"demo", "demo.say"} <= known_types()
    assert plugin.check_reply({"type": "demo.say", "text": "hi"}, dict) is not None
    assert plugin.check_reply({"type": "demo.say", "text": 1}, dict) is None
    assert plugin.stats()["replies_invalid"] == 1
    assert "websocket.send" in known_types()  # added to the shipped specs, not instead of them


def test_adding_the_same_file_twice_is_harmless(tmp_path: Path) -> None:
    spec = tmp_path / "demo.md"
    spec.write_text(DEMO_SPEC, encoding="utf-8")
    add_spec_file(spec, "demo_pkg/demo.md")
    add_spec_file(spec, "demo_pkg/demo.md")
    validate_message({"type": "demo.say", "text": "hi"})
    assert specs.spec_for("demo.say").source.startswith("demo_pkg/demo.md:")


def test_a_broken_plugin_spec_stops_start_up_naming_the_plugin(tmp_path: Path) -> None:
    spec = tmp_path / "demo.md"
    spec.write_text(DEMO_SPEC.replace("direction: worker -> gateway", "direction: sideways"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"protocol 'demo': its spec is broken: .*demo.md:\d+ \(demo.say\): direction"):
        check_plugin_spec("demo", demo_plugin(spec))


def test_a_plugin_cannot_redefine_a_shipped_type(tmp_path: Path) -> None:
    spec = tmp_path / "udp.md"
    spec.write_text(DEMO_SPEC.replace("type: demo.say", "type: udp.send"), encoding="utf-8")
    with pytest.raises(SpecFileError, match=r"udp\.send is already specified in udp\.md"):
        add_spec_file(spec, "evil/udp.md")
    # The registry is as it was: the shipped udp.send still rules, the plugin's scope was not added.
    with pytest.raises(SpecError, match=r"udp\.send: missing required key 'data'"):
        validate_message({"type": "udp.send", "text": "hi"})
    assert "demo" not in known_types()


def test_a_scope_type_without_a_spec_stops_start_up() -> None:
    with pytest.raises(ConfigError, match=r"protocol 'demo': scope type 'demo' is not specified in any spec"):
        check_plugin_spec("demo", demo_plugin(None))


def test_a_spec_file_without_blocks_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "empty.md"
    spec.write_text("# Nothing here\n", encoding="utf-8")
    with pytest.raises(SpecFileError, match=r"empty\.md: no message or scope blocks"):
        add_spec_file(spec)
