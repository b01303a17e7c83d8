"""A broken spec fails loudly, naming the file, line and problem (``SpecFileError``, not ``SpecError``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.gateway import specs
from switchboard.gateway.specs import SpecError, SpecFileError, parse_spec_markdown


def block(body: str, kind: str = "message") -> str:
    return f"# Title\n\nSome prose.\n\n```{kind}\n{body.strip()}\n```\n"


GOOD = """
type: demo.ping
direction: gateway -> worker
keys:
  data: bytes
  count?: int
defaults:
  count: 1
rules:
  - range: {key: count, min: 1}
examples:
  - {data: !bytes "x"}
"""


def test_a_good_block() -> None:
    (spec,) = parse_spec_markdown(block(GOOD), "demo.md")
    assert spec.source == "demo.md:5"
    assert spec.examples == ({"type": "demo.ping", "data": b"x"},)  # type filled in
    assert spec.keys["count"] == specs.KeySpec("count", False, "int")


def test_other_fences_are_ignored() -> None:
    text = "```python\nx = 1\n```\n\n```yaml\ntype: not.a.spec\n```\n" + block(GOOD)
    assert [spec.type for spec in parse_spec_markdown(text, "demo.md")] == ["demo.ping"]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("type: [unclosed", r"demo.md:5: invalid YAML"),
        ("- just a list", "a message block must be a YAML mapping"),
        (GOOD + "example: {}\n", r"unknown fields \['example'\]"),
        (GOOD.replace("type: demo.ping", "type: 42"), "needs a non-empty str type"),
        (GOOD.replace("type: demo.ping", "type: demoping"), r"message types are <protocol>.<event>"),
        (GOOD.replace("gateway -> worker", "upstream"), "direction must be"),
        (GOOD.replace("data: bytes", "data: byte"), r"^demo.md:5 \(demo.ping\), key 'data': unknown type 'byte'"),
        (GOOD.replace("data: bytes", "data: list[bytes"), r"expected \] in type"),
        (GOOD.replace("data: bytes", "data: bytes |"), "expected a type"),
        (GOOD.replace("data: bytes", "data: str[bytes]"), "str takes no parameters"),
        (GOOD.replace("data: bytes", "data: dict[int, str]"), r"dict takes \[str, T\]"),
        (GOOD.replace("data: bytes", "data: bytes | bytes"), "repeated alternative"),
        (GOOD.replace("data: bytes", "data: bytes & str"), "unexpected character '&'"),
        (GOOD.replace("data: bytes", "type: str"), "'type' is implied"),
        (GOOD.replace("count: 1", "count: one"), r"default count must be int, got str 'one'"),
        (GOOD.replace("count: 1", "data: x"), "default for 'data', which is not an optional key"),
        (GOOD.replace("{key: count, min: 1}", "{key: size, min: 1}"), "rule range names key 'size', which is not in keys"),
        (GOOD.replace("range: {key: count, min: 1}", "within: [count]"), "a rule names exactly one of"),
        (GOOD.replace("{key: count, min: 1}", "{key: count}"), "a range needs a numeric min, max or both"),
        (GOOD.replace("{key: count, min: 1}", "{key: count, min: 1, ranges: [[1, 2]]}"), "not both"),
        (GOOD.replace("range: {key: count, min: 1}", "exactly_one_of: [count]"), "at least 2 keys"),
        (GOOD.replace("range: {key: count, min: 1}", "forbidden: [data]"), "forbidden key 'data' is also declared"),
        (GOOD.replace("range: {key: count, min: 1}", "in: {key: count, values: []}"), "non-empty list of values"),
        (GOOD.replace('examples:\n  - {data: !bytes "x"}', "examples: []"), "examples must be a non-empty list"),
        (GOOD.replace('{data: !bytes "x"}', "{type: demo.pong}"), "each example is a mapping of this type"),
        (GOOD.replace('!bytes "x"', '!bytes "\u00e9"'), "!bytes takes ASCII only"),
    ],
)
def test_bad_blocks(body: str, match: str) -> None:
    with pytest.raises(SpecFileError, match=match):
        parse_spec_markdown(block(body), "demo.md")


def test_scope_blocks_have_no_direction_and_no_dot() -> None:
    with pytest.raises(SpecFileError, match="scope blocks have no direction"):
        parse_spec_markdown(block("type: demo\ndirection: gateway -> worker\nexamples: [{}]", "scope"))
    with pytest.raises(SpecFileError, match="scope types are bare protocol names"):
        parse_spec_markdown(block("type: demo.x\nexamples: [{}]", "scope"))


def test_spec_file_error_is_not_a_spec_error() -> None:
    """A plugin catching SpecError for bad replies must never swallow a broken spec."""
    assert not issubclass(SpecFileError, SpecError)


def test_a_type_specified_twice_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "one.md").write_text(block(GOOD), encoding="utf-8")
    (tmp_path / "two.md").write_text(block(GOOD), encoding="utf-8")
    (tmp_path / "README.md").write_text(block("not: [valid"), encoding="utf-8")  # never loaded
    monkeypatch.setattr(specs, "specs_directory", lambda: tmp_path)
    specs.reload_specs()
    try:
        with pytest.raises(SpecFileError, match=r"two.md:5: demo.ping is already specified in one.md:5"):
            specs.known_types()
    finally:
        monkeypatch.undo()
        specs.reload_specs()
    assert "websocket.send" in specs.known_types()


def test_a_new_protocol_is_one_new_spec_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropping a spec into the directory is all it takes for the validators to know the protocol."""
    layer_md = specs.specs_directory().joinpath("layer.md").read_text(encoding="utf-8")
    (tmp_path / "layer.md").write_text(layer_md, encoding="utf-8")
    scope = "type: demo\nkeys: {reply_channel: channel}\nexamples: [{reply_channel: 'gateway.a!b'}]"
    (tmp_path / "demo.md").write_text(block(GOOD) + block(scope, "scope"), encoding="utf-8")
    monkeypatch.setattr(specs, "specs_directory", lambda: tmp_path)
    specs.reload_specs()
    try:
        assert {"demo", "demo.ping"} <= specs.known_types()
        assert "websocket.send" not in specs.known_types()
        specs.validate_message({"type": "demo.ping", "data": b""}, direction="gateway -> worker")
        with pytest.raises(SpecError, match=r"^demo.ping: key 'count' must be in 1.., got 0$"):
            specs.validate_message({"type": "demo.ping", "data": b"", "count": 0})
        specs.validate_envelope(
            {
                "type": "switchboard.event",
                "connection": "gateway.a!b",
                "scope": {"type": "demo", "reply_channel": "gateway.a!b"},
                "event": {"type": "demo.ping", "data": b"x"},
            }
        )
    finally:
        monkeypatch.undo()
        specs.reload_specs()
    assert "demo.ping" not in specs.known_types()


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(SpecFileError, match="not found"):
        specs.load_specs(tmp_path / "nowhere")
