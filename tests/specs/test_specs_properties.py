"""Properties: what the specs' types allow survives the layer, and validation never crashes.

Messages are generated from each spec's own key types (so a new spec is covered without a
new test): a message whose keys match their types either passes or fails a rule, and if it
passes it still passes after the msgpack round trip. Arbitrary junk must only ever raise
``SpecError``, because plugins validate untrusted worker output on their hot path.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchboard.gateway import specs
from switchboard.gateway.layers.core import pack, unpack
from switchboard.gateway.specs import MessageSpec, SpecError

ALL_SPECS = specs.load_specs()
MESSAGE_SPECS = [spec for spec in ALL_SPECS if spec.kind == "message"]

CHANNEL_NAMES = st.from_regex(r"\A[a-zA-Z0-9_.\-]{1,40}(![A-Za-z0-9_.\-]{1,20})?\Z")
INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
SCALARS = st.none() | st.booleans() | INTS | st.floats(allow_nan=False) | st.text(max_size=20) | st.binary(max_size=20)
SERIALIZABLE = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Anything at all, including what msgpack cannot carry.
JUNK = st.recursive(
    SCALARS | st.sets(st.integers(), max_size=2) | st.builds(object) | st.integers(),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.one_of(st.text(max_size=5), st.integers(), st.binary(max_size=3)), inner, max_size=3)
    ),
    max_leaves=10,
)


def strategy_for(type_: Any) -> st.SearchStrategy[Any]:
    """Values of one compiled type expression (uses the compiled form, so every spec is covered)."""
    name = type(type_).__name__
    if name == "_Union":
        return st.one_of([strategy_for(option) for option in type_.options])
    if name == "_List":
        if type_.fixed is not None:
            return st.tuples(*[strategy_for(item) for item in type_.fixed]).map(list)
        return st.lists(strategy_for(type_.item) if type_.item is not None else SERIALIZABLE, max_size=4)
    if name == "_Dict":
        values = strategy_for(type_.value_type) if type_.value_type is not None else SERIALIZABLE
        return st.dictionaries(st.text(max_size=8), values, max_size=3)
    if name == "_Struct":
        required = {field: strategy_for(t) for field, needed, t in type_.fields if needed}
        optional = {field: strategy_for(t) for field, needed, t in type_.fields if not needed}
        return st.fixed_dictionaries(required, optional=optional)
    if name == "_Channel":
        return CHANNEL_NAMES
    if name == "_Any":
        return SERIALIZABLE
    return {
        "str": st.text(max_size=30),
        "bytes": st.binary(max_size=30),
        "int": st.one_of(INTS, st.integers(min_value=-10, max_value=5000)),
        "float": st.floats(allow_nan=False) | INTS,
        "bool": st.booleans(),
        "None": st.none(),
    }[type_.text]


def rule_strategy(spec: MessageSpec, key: str, default: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly values the key's ``in`` / ``range`` rule allows, so well-typed messages often pass."""
    for rule in spec.rules:
        if rule.key != key:
            continue
        if rule.name == "in":
            return st.sampled_from(rule.args["values"]) | default
        if rule.name == "range":
            pairs = rule.args.get("ranges") or [[rule.args.get("min"), rule.args.get("max")]]
            inside = st.one_of(
                [
                    st.integers(
                        min_value=-(2**63) if low is None else math.ceil(low),
                        max_value=2**64 - 1 if high is None else math.floor(high),
                    )
                    for low, high in pairs
                ]
            )
            return inside | default
    return default


def messages_of(spec: MessageSpec) -> st.SearchStrategy[dict[str, Any]]:
    fields = {name: rule_strategy(spec, name, strategy_for(t)) for name, _, t in spec._fields}
    required = {name: fields[name] for name, needed, _ in spec._fields if needed}
    optional = {name: fields[name] for name, needed, _ in spec._fields if not needed}
    return st.fixed_dictionaries({"type": st.just(spec.type), **required}, optional=optional)


def validate(spec: MessageSpec, message: dict[str, Any]) -> None:
    if spec.kind == "scope":
        specs.validate_scope(message)
    else:
        specs.validate_message(message)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=[spec.type for spec in ALL_SPECS])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_well_typed_messages_pass_or_fail_a_rule_and_survive_the_layer(spec: MessageSpec, data: st.DataObject) -> None:
    message = data.draw(messages_of(spec))
    try:
        validate(spec, message)
    except SpecError as exc:
        # Every key has its type, so only a rule may object.
        assert any(check(message) is not None for _, check in spec._rule_checks), str(exc)
        return
    specs.validate_serializable(message)
    received = unpack(pack(message, 0.0, None))[2]
    validate(spec, received)


@pytest.mark.parametrize("spec", MESSAGE_SPECS, ids=[spec.type for spec in MESSAGE_SPECS])
@settings(max_examples=40, deadline=None)
@given(values=st.dictionaries(st.text(max_size=10), JUNK, max_size=4), junk=JUNK)
def test_junk_only_ever_raises_spec_error(spec: MessageSpec, values: dict[str, Any], junk: Any) -> None:
    keyed = {name: junk for name in spec.keys}
    for message in ({**values, "type": spec.type}, {**keyed, "type": spec.type}, junk):
        for call in (specs.validate_message, specs.validate_scope, specs.validate_envelope, specs.validate_serializable):
            try:
                call(message)
            except SpecError:
                pass
    try:
        specs.validate_envelope({"type": "switchboard.event", "connection": "gateway.a!b", "scope": junk, "event": values})
    except SpecError:
        pass


@settings(max_examples=300, deadline=None)
@given(code=st.integers(min_value=-10, max_value=70000))
def test_close_code_rule_matches_rfc_6455(code: int) -> None:
    sendable = code in {1000, 1001, 1002, 1003, *range(1007, 1015)} or 3000 <= code <= 4999
    try:
        specs.validate_message({"type": "websocket.close", "code": code})
    except SpecError:
        assert not sendable
    else:
        assert sendable


@given(
    data=st.one_of(st.none(), st.binary(max_size=5), st.text(max_size=5), st.integers()),
    text=st.one_of(st.none(), st.binary(max_size=5), st.text(max_size=5), st.integers()),
)
def test_websocket_send_rule(data: Any, text: Any) -> None:
    valid = (
        (data is None) != (text is None) and (data is None or isinstance(data, bytes)) and (text is None or isinstance(text, str))
    )
    try:
        specs.validate_message({"type": "websocket.send", "bytes": data, "text": text})
    except SpecError:
        assert not valid
    else:
        assert valid


def test_validation_is_cheap() -> None:
    """Plugins validate on their hot path: tens of thousands per second with a wide margin."""
    send = {"type": "websocket.send", "text": "hello"}
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [[b"content-type", b"text/html"], [b"content-length", b"13"], [b"set-cookie", b"a=1"]],
    }
    specs.validate_message(send)
    began = time.perf_counter()
    for _ in range(5000):
        specs.validate_message(send, direction=specs.WORKER_TO_GATEWAY)
        specs.validate_message(start, direction=specs.WORKER_TO_GATEWAY)
    elapsed = time.perf_counter() - began
    # About 2 us per message on a laptop; 100 us would still pass (slow CI, coverage tracing).
    assert elapsed < 1.0, f"10,000 validations took {elapsed:.2f}s"
