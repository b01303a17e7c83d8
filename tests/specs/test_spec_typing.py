"""The generated message types (switchboard/messages.py) agree with the specs.

Why: the specs are the one source of truth; the TypedDicts exist so that plugins and
consumers get a type error for a misspelt key. If a spec changes and the types do not,
type checking silently checks against the old format, so a stale file fails here.
"""

from __future__ import annotations

import typing

import pytest

from switchboard import messages
from switchboard.gateway import spec_typing
from switchboard.gateway.specs import load_specs

SPECS = load_specs()


def test_committed_module_is_what_the_specs_generate() -> None:
    assert spec_typing.generated_path().read_text(encoding="utf-8") == spec_typing.render(), (
        "switchboard/messages.py is stale: run python -m switchboard.gateway.spec_typing --write"
    )


def test_check_flag_agrees() -> None:
    assert spec_typing.main(["--check"]) == 0


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.type)
def test_every_spec_has_its_typed_dict_with_the_same_keys(spec: typing.Any) -> None:
    typed = getattr(messages, spec_typing.class_name(spec.type, spec.kind))
    required = {name for name, key in spec.keys.items() if key.required} | {"type"}
    optional = {name for name, key in spec.keys.items() if not key.required}
    assert typed.__required_keys__ == required
    assert typed.__optional_keys__ == optional
    hints = typing.get_type_hints(typed)
    assert typing.get_args(hints["type"]) == (spec.type,)


def test_names_are_asgiref_style() -> None:
    assert spec_typing.class_name("http.response.start", "message") == "HttpResponseStartEvent"
    assert spec_typing.class_name("websocket", "scope") == "WebsocketScope"
    assert spec_typing.class_name("webrtc.datachannel.send", "message") == "WebrtcDatachannelSendEvent"


def test_union_aliases_cover_each_direction() -> None:
    to_gateway = set(typing.get_args(messages.WebsocketToGateway))
    assert messages.WebsocketSendEvent in to_gateway
    assert messages.WebsocketReceiveEvent not in to_gateway
    assert messages.WebsocketReceiveEvent in set(typing.get_args(messages.WebsocketToWorker))


def test_a_spec_change_shows_in_the_rendered_source() -> None:
    """The generator reads the blocks, not a cached copy: an edited key appears in the output."""
    from switchboard.gateway.specs import parse_spec_markdown

    text = (
        "```message\ntype: demo.ping\ndirection: worker -> gateway\n"
        "keys:\n  count?: int\n  from: str\nexamples:\n  - {from: a}\n```\n"
    )
    source = spec_typing.render(parse_spec_markdown(text, "demo.md"))
    assert '"count": NotRequired[int]' in source
    assert '"from": str' in source  # a keyword key: the functional TypedDict form
    namespace: dict[str, typing.Any] = {}
    exec(compile(source, "demo_messages.py", "exec"), namespace)
    assert namespace["DemoPingEvent"].__required_keys__ == {"type", "from"}
