"""Every spec file loads, every block compiles, and every example is valid, also after msgpack.

These run over whatever is in ``specs/``, so a protocol author's new spec is checked the
moment it is added: a block that does not parse, an example that contradicts its own
block, or an example that would not survive the layer fails here, not in production.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from switchboard.gateway import specs
from switchboard.gateway.layers.core import pack, unpack
from switchboard.gateway.specs import MessageSpec, SpecError

ALL_SPECS = specs.load_specs()
SPEC_IDS = [spec.type for spec in ALL_SPECS]
EXAMPLES = [(spec, index, example) for spec in ALL_SPECS for index, example in enumerate(spec.examples)]
EXAMPLE_IDS = [f"{spec.type}#{index}" for spec, index, _ in EXAMPLES]
SPEC_FILES = sorted(
    entry for entry in specs.specs_directory().iterdir() if entry.name.endswith(".md") and entry.name != "README.md"
)
FENCE_RE = re.compile(r"^```[ \t]*(\S*)", re.MULTILINE)


def validate_example(spec: MessageSpec, example: dict[str, Any]) -> None:
    """Validate ``example`` the way the code that sends or receives it would."""
    if spec.kind == "scope":
        specs.validate_scope(example)
    elif spec.type == "switchboard.event":
        specs.validate_envelope(example)
    else:
        specs.validate_message(example, direction=spec.direction)


def to_tuples(value: Any) -> Any:
    """Lists to tuples, recursively: what Python code (Django's headers) builds before sending."""
    if isinstance(value, list):
        return tuple(to_tuples(item) for item in value)
    if isinstance(value, dict):
        return {key: to_tuples(item) for key, item in value.items()}
    return value


def round_trip(message: dict[str, Any]) -> dict[str, Any]:
    """Through the layer's own packing, as both backends store messages."""
    return unpack(pack(message, 0.0, None))[2]


# -- loading --------------------------------------------------------------------------


def test_spec_files_found_through_the_package() -> None:
    directory = specs.specs_directory()
    names = {entry.name for entry in directory.iterdir()}
    assert {"README.md", "layer.md", "http.md", "websocket.md"} <= names
    # Found as package data of ``switchboard`` (what setup.py ships), not by a source-tree path.
    import switchboard

    assert Path(str(directory)).resolve() == (Path(switchboard.__file__).parent / "specs").resolve()


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.name)
def test_every_block_in_every_file_compiles(path: Any) -> None:
    text = path.read_text(encoding="utf-8")
    # Only fences with the info string ``message`` or ``scope`` are spec blocks.
    expected = sum(1 for info in FENCE_RE.findall(text) if info in ("message", "scope"))
    compiled = specs.parse_spec_markdown(text, path.name)
    assert len(compiled) == expected
    assert expected > 0, f"{path.name} has no message or scope blocks"
    for spec in compiled:
        assert spec.source.startswith(f"{path.name}:")


def test_no_block_is_near_miss_spelled() -> None:
    """A fence like ```messages or ```Message would be silently skipped: forbid it."""
    for path in SPEC_FILES:
        for info in FENCE_RE.findall(path.read_text(encoding="utf-8")):
            if info.lower().startswith(("message", "scope")):
                assert info in ("message", "scope"), f"{path.name}: fence info string {info!r}"


def test_readme_blocks_are_not_specs() -> None:
    readme = specs.specs_directory().joinpath("README.md").read_text(encoding="utf-8")
    assert specs.parse_spec_markdown(readme, "README.md") == []


def test_core_types_are_known() -> None:
    assert specs.known_types("scope") >= {"http", "websocket", "channel"}
    assert specs.known_types("message") >= {
        "switchboard.event",
        "http.request",
        "http.disconnect",
        "http.response.start",
        "http.response.body",
        "websocket.connect",
        "websocket.receive",
        "websocket.disconnect",
        "websocket.accept",
        "websocket.send",
        "websocket.close",
        "websocket.http.response.start",
        "websocket.http.response.body",
    }
    assert specs.known_types() == specs.known_types("scope") | specs.known_types("message")
    assert not specs.known_types("scope") & specs.known_types("message")


def test_type_names_follow_the_naming_rules() -> None:
    for spec in ALL_SPECS:
        if spec.kind == "scope":
            assert "." not in spec.type
        else:
            assert spec.type.partition(".")[0] and spec.direction in (specs.GATEWAY_TO_WORKER, specs.WORKER_TO_GATEWAY)


def test_every_protocol_scope_has_reply_channel_and_forbids_state() -> None:
    for spec in ALL_SPECS:
        if spec.kind != "scope" or spec.type == "channel":  # the named-channel scope never crosses the layer
            continue
        assert spec.keys["reply_channel"].required and spec.keys["reply_channel"].type == "channel", spec.type
        assert any(rule.name == "forbidden" and "state" in rule.args for rule in spec.rules), spec.type


def test_messages_of_a_protocol_have_its_scope() -> None:
    scopes = specs.known_types("scope")
    for spec in ALL_SPECS:
        if spec.kind == "message" and spec.protocol != "switchboard":  # the layer's own types
            assert spec.protocol in scopes, f"{spec.type} has no {spec.protocol} scope spec"


def test_spec_for() -> None:
    close = specs.spec_for("websocket.close")
    assert close.kind == "message" and close.direction == specs.WORKER_TO_GATEWAY
    assert close.defaults == {"code": 1000, "reason": ""}
    assert close.keys["code"] == specs.KeySpec("code", False, "int")
    assert specs.spec_for("websocket").kind == "scope"
    assert specs.spec_for("http").keys["headers"].type == "list[list[bytes, bytes]]"
    assert specs.spec_for("websocket.http.response.start").extension == "websocket.http.response"
    with pytest.raises(KeyError, match=r"chat\.message"):
        specs.spec_for("chat.message")


def test_specs_are_compiled_once() -> None:
    specs.reload_specs()
    for _ in range(3):
        specs.validate_message({"type": "websocket.send", "text": "x"})
        specs.known_types()
        specs.spec_for("http")
    info = specs._registry.cache_info()
    assert info.misses == 1 and info.hits >= 8


# -- examples ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL_SPECS, ids=SPEC_IDS)
def test_every_type_has_an_example(spec: MessageSpec) -> None:
    assert spec.examples
    assert all(example["type"] == spec.type for example in spec.examples)


@pytest.mark.parametrize(("spec", "index", "example"), EXAMPLES, ids=EXAMPLE_IDS)
def test_example_is_valid(spec: MessageSpec, index: int, example: dict[str, Any]) -> None:
    validate_example(spec, example)


@pytest.mark.parametrize(("spec", "index", "example"), EXAMPLES, ids=EXAMPLE_IDS)
def test_example_survives_the_layer(spec: MessageSpec, index: int, example: dict[str, Any]) -> None:
    specs.validate_serializable(example)
    received = round_trip(example)
    assert received == example
    validate_example(spec, received)


@pytest.mark.parametrize(("spec", "index", "example"), EXAMPLES, ids=EXAMPLE_IDS)
def test_example_with_tuples_is_valid_and_arrives_as_lists(spec: MessageSpec, index: int, example: dict[str, Any]) -> None:
    """Tuples pass before sending (Django builds headers as tuples) and arrive as the lists the spec shows."""
    as_built = to_tuples(example)
    validate_example(spec, as_built)
    received = round_trip(as_built)
    assert received == example
    validate_example(spec, received)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=SPEC_IDS)
def test_defaults_are_for_optional_keys_and_keep_examples_valid(spec: MessageSpec) -> None:
    """Filling in every default (what a receiver assumes) keeps each example valid."""
    for name in spec.defaults:
        assert not spec.keys[name].required
    for example in spec.examples:
        validate_example(spec, {**spec.defaults, **example})


@pytest.mark.parametrize("spec", [s for s in ALL_SPECS if s.kind == "message"], ids=lambda s: s.type)
def test_required_keys_are_required(spec: MessageSpec) -> None:
    example = spec.examples[0]
    for key in spec.keys.values():
        if key.required:
            broken = {k: v for k, v in example.items() if k != key.name}
            with pytest.raises(SpecError, match=f"missing required key '{key.name}'") as info:
                specs.validate_message(broken)
            assert info.value.key == key.name and info.value.type_name == spec.type


@pytest.mark.parametrize("spec", ALL_SPECS, ids=SPEC_IDS)
def test_unknown_keys_are_allowed(spec: MessageSpec) -> None:
    """ASGI lets servers and applications add keys for extensions; receivers ignore them."""
    example = {**spec.examples[0], "x_vendor_extension": {"anything": [1, 2.5, None]}}
    validate_example(spec, example)
