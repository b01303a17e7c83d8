"""Message-format specifications as code: load ``specs/*.md`` and validate against them.

Each file in ``specs/`` is prose for people plus fenced blocks of YAML for machines: a block
with the info string ``message`` specifies one message type, ``scope`` one scope type (the
block schema is in ``specs/README.md``). This module compiles those blocks into validators
so that

* tests prove that what the gateway and the worker emit is what the specs say;
* a protocol plugin can check a worker's reply before writing it to its client, turning a
  consumer bug into a precise error (``websocket.send: exactly one of 'bytes', 'text' must
  be set (not None), got both``) instead of a failure deep inside a protocol library;
* the specs cannot drift from the code, because the code reads them.

Plugins call :func:`validate_message` on their hot path, so the blocks are parsed and
compiled once per process (:func:`_registry` is ``lru_cache``-d) and checking a message is a
dict lookup plus a few ``isinstance`` calls per key. Building a precise error message is
left to the failure path.

Unknown keys are allowed everywhere: ASGI lets servers and applications add keys for
extensions, so a spec lists the keys it defines and never closes the mapping (a block can
still name keys that must not appear, with a ``forbidden`` rule).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from .envelope import EVENT_TYPE
from .layers.names import InvalidName, check_channel_name

__all__ = [
    "GATEWAY_TO_WORKER",
    "WORKER_TO_GATEWAY",
    "KeySpec",
    "MessageSpec",
    "Rule",
    "SpecError",
    "SpecFileError",
    "add_spec_file",
    "known_types",
    "load_specs",
    "parse_spec_markdown",
    "reload_specs",
    "spec_for",
    "specs_directory",
    "validate_envelope",
    "validate_message",
    "validate_scope",
    "validate_serializable",
]

GATEWAY_TO_WORKER: Final = "gateway -> worker"
WORKER_TO_GATEWAY: Final = "worker -> gateway"

# Accepted spellings of a direction, so ``"worker->gateway"`` works as well as the canonical form.
_DIRECTIONS: Final[dict[str, str]] = {
    GATEWAY_TO_WORKER: GATEWAY_TO_WORKER,
    "gateway->worker": GATEWAY_TO_WORKER,
    WORKER_TO_GATEWAY: WORKER_TO_GATEWAY,
    "worker->gateway": WORKER_TO_GATEWAY,
}

Kind = Literal["message", "scope"]

_MISSING: Final = object()


class SpecError(ValueError):
    """A message, scope or envelope does not match its spec.

    ``type_name`` is the message or scope type at fault (None when the object has no usable
    ``type``) and ``key`` the top-level key at fault (None when the problem is not one
    key's), so callers can count or report failures without parsing the message text.
    """

    def __init__(self, message: str, *, type_name: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.key = key


class SpecFileError(Exception):
    """A spec file itself is malformed: a bug in ``specs/``, never in a message.

    Kept apart from :class:`SpecError` so that a plugin catching bad replies never swallows
    a broken spec.
    """


# -- type expressions -------------------------------------------------------------------
#
# A key's type is a small expression: atoms (str, bytes, int, float, bool, None, list,
# dict, any, channel), ``list[T]`` (any length), ``list[T1, T2, ...]`` (exactly that many
# items), ``dict[str, T]`` and unions ``A | B``. A YAML mapping in place of the expression
# is a nested struct (``asgi: {version: str, spec_version?: str}``). Each compiles to an
# object whose ``check`` is the fast boolean test and whose ``explain`` says what is wrong.


def _describe(value: Any) -> str:
    """A short description of ``value`` for error messages (never a huge repr)."""
    if value is None:
        return "None"
    name = type(value).__name__
    if isinstance(value, str | bytes):
        shown = repr(value[:40]) + ("..." if len(value) > 40 else "")
        return f"{name} {shown}"
    if isinstance(value, bool | float):
        return f"{name} {value!r}"
    if isinstance(value, int):
        return f"{name} {value}" if -(10**30) < value < 10**30 else f"{name} (a {value.bit_length()}-bit value)"
    if isinstance(value, list | tuple | dict):
        return f"{name} of {len(value)} items"
    return name


class _Type:
    """A compiled type expression."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def check(self, value: Any) -> bool:
        raise NotImplementedError

    def explain(self, value: Any, path: str) -> str | None:
        """Why ``value`` (found at ``path``) does not match, or None when it does."""
        if self.check(value):
            return None
        return f"{path} must be {self.text}, got {_describe(value)}"

    def same_shape(self, value: Any) -> bool:
        """Whether ``value`` is this type's kind of container (picks a union branch to explain)."""
        return False


class _Atom(_Type):
    """A plain type: ``isinstance`` against ``classes``."""

    __slots__ = ("classes",)

    def __init__(self, text: str, classes: tuple[type, ...]) -> None:
        super().__init__(text)
        self.classes = classes

    def check(self, value: Any) -> bool:
        return isinstance(value, self.classes)


# The ints msgpack carries; a bigger one fails at send (OverflowError), so it is no valid int.
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1


class _Number(_Type):
    """``int`` (not bool, within msgpack's range) or, for ``float``, also a float."""

    __slots__ = ("classes",)

    def __init__(self, text: str, classes: tuple[type, ...]) -> None:
        super().__init__(text)
        self.classes = classes

    def check(self, value: Any) -> bool:
        if value.__class__ is bool or not isinstance(value, self.classes):
            return False
        return not isinstance(value, int) or _INT_MIN <= value <= _INT_MAX

    def explain(self, value: Any, path: str) -> str | None:
        if self.check(value):
            return None
        if isinstance(value, int) and value.__class__ is not bool:
            return f"{path} must be {self.text} within -2**63..2**64-1 (what the layer carries), got {_describe(value)}"
        return f"{path} must be {self.text}, got {_describe(value)}"


class _Any(_Type):
    __slots__ = ()

    def check(self, value: Any) -> bool:
        return True


class _Channel(_Type):
    """A channel name one can send to (the layer's naming rules)."""

    __slots__ = ()

    def check(self, value: Any) -> bool:
        try:
            check_channel_name(value)
        except InvalidName:
            return False
        return True

    def explain(self, value: Any, path: str) -> str | None:
        try:
            check_channel_name(value)
        except InvalidName as exc:
            return f"{path} must be a channel name: {exc}"
        return None


class _List(_Type):
    """``list`` / ``list[T]`` / ``list[T1, ..., Tn]``; a tuple passes too (it arrives as a list)."""

    __slots__ = ("fixed", "item")

    def __init__(self, text: str, item: _Type | None = None, fixed: tuple[_Type, ...] | None = None) -> None:
        super().__init__(text)
        self.item = item
        self.fixed = fixed

    def same_shape(self, value: Any) -> bool:
        return isinstance(value, list | tuple)

    def check(self, value: Any) -> bool:
        if not isinstance(value, list | tuple):
            return False
        fixed = self.fixed
        if fixed is not None:
            if len(value) != len(fixed):
                return False
            for item_type, item in zip(fixed, value):
                if not item_type.check(item):
                    return False
            return True
        if self.item is not None:
            check = self.item.check
            for item in value:
                if not check(item):
                    return False
        return True

    def explain(self, value: Any, path: str) -> str | None:
        if not isinstance(value, list | tuple):
            return f"{path} must be {self.text}, got {_describe(value)}"
        if self.fixed is not None:
            if len(value) != len(self.fixed):
                return f"{path} must be {self.text} (exactly {len(self.fixed)} items), got {len(value)} items"
            pairs: Iterator[tuple[_Type, Any]] = zip(self.fixed, value)
        elif self.item is not None:
            item_type = self.item
            pairs = ((item_type, item) for item in value)
        else:
            return None
        for index, (item_type, item) in enumerate(pairs):
            problem = item_type.explain(item, f"{path}[{index}]")
            if problem is not None:
                return problem
        return None


class _Dict(_Type):
    """``dict`` / ``dict[str, T]``: keys must be str (msgpack maps with other keys fail to unpack)."""

    __slots__ = ("value_type",)

    def __init__(self, text: str, value_type: _Type | None = None) -> None:
        super().__init__(text)
        self.value_type = value_type

    def same_shape(self, value: Any) -> bool:
        return isinstance(value, dict)

    def check(self, value: Any) -> bool:
        if not isinstance(value, dict):
            return False
        for key in value:
            if not isinstance(key, str):
                return False
        value_type = self.value_type
        if value_type is not None:
            check = value_type.check
            for item in value.values():
                if not check(item):
                    return False
        return True

    def explain(self, value: Any, path: str) -> str | None:
        if not isinstance(value, dict):
            return f"{path} must be {self.text}, got {_describe(value)}"
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} must have str keys, got key {_describe(key)}"
            if self.value_type is not None:
                problem = self.value_type.explain(item, f"{path}[{key!r}]")
                if problem is not None:
                    return problem
        return None


class _Struct(_Type):
    """A dict with named keys (a YAML mapping used as a key's type); extra keys allowed."""

    __slots__ = ("fields",)

    def __init__(self, text: str, fields: tuple[tuple[str, bool, _Type], ...]) -> None:
        super().__init__(text)
        self.fields = fields

    def same_shape(self, value: Any) -> bool:
        return isinstance(value, dict)

    def check(self, value: Any) -> bool:
        if not isinstance(value, dict):
            return False
        for name, required, field_type in self.fields:
            item = value.get(name, _MISSING)
            if item is _MISSING:
                if required:
                    return False
            elif not field_type.check(item):
                return False
        return True

    def explain(self, value: Any, path: str) -> str | None:
        if not isinstance(value, dict):
            return f"{path} must be {self.text}, got {_describe(value)}"
        for name, required, field_type in self.fields:
            item = value.get(name, _MISSING)
            if item is _MISSING:
                if required:
                    return f"{path}.{name} is required ({field_type.text})"
                continue
            problem = field_type.explain(item, f"{path}.{name}")
            if problem is not None:
                return problem
        return None


class _Union(_Type):
    __slots__ = ("options",)

    def __init__(self, text: str, options: tuple[_Type, ...]) -> None:
        super().__init__(text)
        self.options = options

    def same_shape(self, value: Any) -> bool:
        return any(option.same_shape(value) for option in self.options)

    def check(self, value: Any) -> bool:
        for option in self.options:
            if option.check(value):
                return True
        return False

    def explain(self, value: Any, path: str) -> str | None:
        if self.check(value):
            return None
        # ``[b"host", "x"]`` against ``list[bytes, bytes] | None``: say which item is wrong.
        shaped = [option for option in self.options if option.same_shape(value)]
        if len(shaped) == 1:
            return shaped[0].explain(value, path)
        return f"{path} must be {self.text}, got {_describe(value)}"


_ATOMS: Final[dict[str, _Type]] = {
    "str": _Atom("str", (str,)),
    "bytes": _Atom("bytes", (bytes,)),
    # ``True`` is an int in Python, but a status or close code of ``True`` is a bug.
    "int": _Number("int", (int,)),
    "float": _Number("float", (int, float)),
    "bool": _Atom("bool", (bool,)),
    "None": _Atom("None", (type(None),)),
    "list": _List("list"),
    "dict": _Dict("dict"),
    "any": _Any("any"),
    "channel": _Channel("channel"),
}

_TOKEN_RE = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|([\[\],|]))")


class _TypeParser:
    """Recursive descent over ``union := term ('|' term)*; term := NAME ('[' union (',' union)* ']')?``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[str] = []
        position = 0
        stripped = text.rstrip()
        while position < len(stripped):
            match = _TOKEN_RE.match(stripped, position)
            if match is None:
                raise ValueError(f"unexpected character {stripped[position:].lstrip()[:1]!r} in type {text!r}")
            self.tokens.append(match.group(1) or match.group(2))
            position = match.end()
        self.index = 0

    def parse(self) -> _Type:
        if not self.tokens:
            raise ValueError("empty type")
        result = self.union()
        if self.index != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.index]!r} in type {self.text!r}")
        return result

    def peek(self) -> str | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise ValueError(f"expected {expected or 'a type'} in type {self.text!r}, got {token or 'the end'!r}")
        self.index += 1
        return token

    def union(self) -> _Type:
        options = [self.term()]
        while self.peek() == "|":
            self.take("|")
            options.append(self.term())
        if len(options) == 1:
            return options[0]
        texts = [option.text for option in options]
        if len(set(texts)) != len(texts):
            raise ValueError(f"repeated alternative in type {self.text!r}")
        return _Union(" | ".join(texts), tuple(options))

    def term(self) -> _Type:
        name = self.take()
        if name not in _ATOMS:
            raise ValueError(f"unknown type {name!r} in {self.text!r} (known: {', '.join(_ATOMS)})")
        if self.peek() != "[":
            return _ATOMS[name]
        if name not in ("list", "dict"):
            raise ValueError(f"{name} takes no parameters in type {self.text!r}")
        self.take("[")
        params = [self.union()]
        while self.peek() == ",":
            self.take(",")
            params.append(self.union())
        self.take("]")
        text = f"{name}[{', '.join(param.text for param in params)}]"
        if name == "list":
            return _List(text, item=params[0]) if len(params) == 1 else _List(text, fixed=tuple(params))
        if len(params) != 2 or params[0].text != "str":
            raise ValueError(f"dict takes [str, T] in type {self.text!r}: layer maps have str keys")
        return _Dict(text, value_type=params[1])


def _compile_type(declared: Any, where: str) -> _Type:
    if isinstance(declared, dict):
        fields = tuple(_compile_key(name, sub, where) for name, sub in declared.items())
        text = "{" + ", ".join(f"{name}{'' if required else '?'}: {t.text}" for name, required, t in fields) + "}"
        return _Struct(text, fields)
    if not isinstance(declared, str):
        raise SpecFileError(f"{where}: a type must be a string or a mapping, got {_describe(declared)}")
    try:
        return _TypeParser(declared).parse()
    except ValueError as exc:
        raise SpecFileError(f"{where}: {exc}") from None


def _compile_key(declared_name: Any, declared_type: Any, where: str) -> tuple[str, bool, _Type]:
    if not isinstance(declared_name, str) or not declared_name.rstrip("?"):
        raise SpecFileError(f"{where}: key names must be non-empty strings, got {declared_name!r}")
    optional = declared_name.endswith("?")
    name = declared_name[:-1] if optional else declared_name
    return name, not optional, _compile_type(declared_type, f"{where}, key {name!r}")


# -- rules ------------------------------------------------------------------------------

# A compiled rule: None when the message satisfies it, else what is wrong.
RuleCheck = Callable[[Mapping[str, Any]], str | None]


@dataclass(frozen=True)
class Rule:
    """One ``rules`` entry: ``name`` (``range``...), its ``args`` as written, optional ``why``.

    ``key`` is the key a single-key rule constrains (reported as :attr:`SpecError.key`).
    """

    name: str
    args: Any
    why: str | None
    key: str | None
    check: RuleCheck = field(repr=False, compare=False)


def _set_keys(message: Mapping[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [key for key in keys if message.get(key) is not None]


def _rule_exactly_one_of(keys: tuple[str, ...]) -> RuleCheck:
    listed = ", ".join(repr(key) for key in keys)

    def check(message: Mapping[str, Any]) -> str | None:
        found = _set_keys(message, keys)
        if len(found) == 1:
            return None
        got = "none of them" if not found else "all of them" if len(found) == len(keys) else ", ".join(found)
        if len(keys) == 2 and len(found) == 2:
            got = "both"
        return f"exactly one of {listed} must be set (not None), got {got}"

    return check


def _rule_at_most_one_of(keys: tuple[str, ...]) -> RuleCheck:
    listed = ", ".join(repr(key) for key in keys)

    def check(message: Mapping[str, Any]) -> str | None:
        found = _set_keys(message, keys)
        if len(found) <= 1:
            return None
        return f"at most one of {listed} may be set (not None), got {', '.join(repr(key) for key in found)}"

    return check


def _rule_range(key: str, intervals: tuple[tuple[float | None, float | None], ...]) -> RuleCheck:
    """The value lies in one of ``intervals`` (inclusive; None is unbounded)."""
    shown = ", ".join(f"{'' if low is None else low}..{'' if high is None else high}" for low, high in intervals)
    if len(intervals) > 1:
        shown = shown.rpartition(", ")[0] + " or " + shown.rpartition(", ")[2]

    def check(message: Mapping[str, Any]) -> str | None:
        value = message.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        for low, high in intervals:
            if (low is None or value >= low) and (high is None or value <= high):
                return None
        return f"key {key!r} must be in {shown}, got {value!r}"

    return check


def _rule_in(key: str, values: tuple[Any, ...]) -> RuleCheck:
    shown = ", ".join(repr(value) for value in values)

    def check(message: Mapping[str, Any]) -> str | None:
        value = message.get(key)
        if value is None or value in values:
            return None
        return f"key {key!r} must be one of {shown}, got {_describe(value)}"

    return check


def _rule_not_in(key: str, values: tuple[Any, ...]) -> RuleCheck:
    def check(message: Mapping[str, Any]) -> str | None:
        value = message.get(key)
        if value is None or value not in values:
            return None
        return f"key {key!r} must not be {value!r}"

    return check


def _rule_max_length(key: str, limit: int) -> RuleCheck:
    def check(message: Mapping[str, Any]) -> str | None:
        value = message.get(key)
        if isinstance(value, str):
            # Wire limits are in bytes, so a str is measured as it will be sent.
            size = len(value.encode("utf-8", "surrogatepass"))
            if size > limit:
                return f"key {key!r} must be at most {limit} bytes in UTF-8, got {size}"
        elif isinstance(value, bytes | list | tuple | dict) and len(value) > limit:
            return f"key {key!r} must have at most {limit} items/bytes, got {len(value)}"
        return None

    return check


def _with_why(inner: RuleCheck, why: str) -> RuleCheck:
    def check(message: Mapping[str, Any]) -> str | None:
        problem = inner(message)
        return problem if problem is None else f"{problem} ({why})"

    return check


def _rule_forbidden(keys: tuple[str, ...]) -> RuleCheck:
    def check(message: Mapping[str, Any]) -> str | None:
        for key in keys:
            if key in message:
                return f"key {key!r} must not be present"
        return None

    return check


_RULE_NAMES: Final = ("exactly_one_of", "at_most_one_of", "range", "in", "not_in", "max_length", "forbidden")


def _interval(pair: Any, where: str) -> tuple[float | None, float | None]:
    if (
        not isinstance(pair, list)
        or len(pair) != 2
        or pair == [None, None]
        or not all(b is None or (isinstance(b, int | float) and not isinstance(b, bool)) for b in pair)
    ):
        raise SpecFileError(f"{where}: a range needs a numeric min, max or both, got {pair!r}")
    return pair[0], pair[1]


def _compile_rule(raw: Any, declared: Mapping[str, tuple[bool, _Type]], where: str) -> Rule:
    if not isinstance(raw, dict):
        raise SpecFileError(f"{where}: a rule must be a mapping like {{range: {{key: code, min: 1000}}}}, got {raw!r}")
    names = [name for name in raw if name != "why"]
    if len(names) != 1 or names[0] not in _RULE_NAMES:
        raise SpecFileError(f"{where}: a rule names exactly one of {', '.join(_RULE_NAMES)} (plus optional why)")
    name = names[0]
    args = raw[name]
    why = raw.get("why")
    if why is not None and not isinstance(why, str):
        raise SpecFileError(f"{where}: why must be a string")

    def declared_key(key: Any) -> str:
        if key not in declared:
            raise SpecFileError(f"{where}: rule {name} names key {key!r}, which is not in keys")
        return str(key)

    def key_list(minimum: int) -> tuple[str, ...]:
        if not isinstance(args, list) or len(args) < minimum:
            raise SpecFileError(f"{where}: {name} takes a list of at least {minimum} keys")
        return tuple(args)

    def arg_map(allowed: set[str], required: set[str]) -> dict[str, Any]:
        if not isinstance(args, dict) or not required <= set(args) or not set(args) <= allowed:
            raise SpecFileError(f"{where}: {name} takes a mapping with {', '.join(sorted(allowed))}")
        return args

    check: RuleCheck
    key: str | None = None
    if name in ("exactly_one_of", "at_most_one_of"):
        keys = tuple(declared_key(k) for k in key_list(2))
        check = _rule_exactly_one_of(keys) if name == "exactly_one_of" else _rule_at_most_one_of(keys)
    elif name == "range":
        spec = arg_map({"key", "min", "max", "ranges"}, {"key"})
        if "ranges" in spec:
            if "min" in spec or "max" in spec or not isinstance(spec["ranges"], list) or not spec["ranges"]:
                raise SpecFileError(f"{where}: range takes min/max or a non-empty list of [min, max] ranges, not both")
            intervals = tuple(_interval(pair, where) for pair in spec["ranges"])
        else:
            intervals = (_interval([spec.get("min"), spec.get("max")], where),)
        key = declared_key(spec["key"])
        check = _rule_range(key, intervals)
    elif name in ("in", "not_in"):
        spec = arg_map({"key", "values"}, {"key", "values"})
        if not isinstance(spec["values"], list) or not spec["values"]:
            raise SpecFileError(f"{where}: {name} needs a non-empty list of values")
        values = tuple(spec["values"])
        key = declared_key(spec["key"])
        check = _rule_in(key, values) if name == "in" else _rule_not_in(key, values)
    elif name == "max_length":
        spec = arg_map({"key", "max"}, {"key", "max"})
        if not isinstance(spec["max"], int) or spec["max"] < 0:
            raise SpecFileError(f"{where}: max_length needs a non-negative int max")
        key = declared_key(spec["key"])
        check = _rule_max_length(key, spec["max"])
    else:  # forbidden
        keys = key_list(1)
        for k in keys:
            if k in declared:
                raise SpecFileError(f"{where}: forbidden key {k!r} is also declared in keys")
        key = keys[0] if len(keys) == 1 else None
        check = _rule_forbidden(keys)
    if why is not None:
        check = _with_why(check, why)
    return Rule(name, args, why, key, check)


# -- specs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeySpec:
    """One key of a message or scope: its name, whether it is required, its type as text."""

    name: str
    required: bool
    type: str


@dataclass(frozen=True)
class MessageSpec:
    """One compiled ``message`` or ``scope`` block.

    ``extension`` names the scope extension (``scope["extensions"]``) a server must announce
    before an application may send this message; a plugin that has the scope at hand checks
    it, since a message alone cannot show which connection it belongs to.
    """

    type: str
    kind: Kind
    direction: str | None
    extension: str | None
    keys: Mapping[str, KeySpec]
    defaults: Mapping[str, Any]
    rules: tuple[Rule, ...]
    examples: tuple[dict[str, Any], ...]
    source: str
    _fields: tuple[tuple[str, bool, _Type], ...] = field(repr=False, compare=False)
    _rule_checks: tuple[tuple[str | None, RuleCheck], ...] = field(repr=False, compare=False)

    @property
    def protocol(self) -> str:
        """The protocol name: the scope type, or a message type's first dotted part."""
        return self.type.partition(".")[0]

    @property
    def label(self) -> str:
        return f"{self.type} scope" if self.kind == "scope" else self.type

    def validate(self, obj: Mapping[str, Any]) -> None:
        """Check ``obj`` (whose ``type`` already selected this spec) against the keys and rules."""
        for name, required, key_type in self._fields:
            value = obj.get(name, _MISSING)
            if value is _MISSING:
                if required:
                    raise SpecError(
                        f"{self.label}: missing required key {name!r} ({key_type.text})", type_name=self.type, key=name
                    )
            elif not key_type.check(value):
                raise self._type_error(name, key_type, value)
        for key, rule_check in self._rule_checks:
            problem = rule_check(obj)
            if problem is not None:
                raise SpecError(f"{self.label}: {problem}", type_name=self.type, key=key)

    def _type_error(self, name: str, key_type: _Type, value: Any) -> SpecError:
        detail = key_type.explain(value, name) or f"{name} must be {key_type.text}"
        if not detail.startswith(f"{name} "):  # the fault is inside the value: show the whole type too
            detail += f" (key {name!r} is {key_type.text})"
        return SpecError(f"{self.label}: key {detail}", type_name=self.type, key=name)


_BLOCK_FIELDS: Final = frozenset({"type", "direction", "extension", "keys", "defaults", "rules", "examples"})
_FENCE_RE = re.compile(r"^```[ \t]*(message|scope)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


class _SpecLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` plus the ``!bytes`` tag, so examples can show bytes readably.

    ``!bytes "text/html"`` is the ASCII encoding of the scalar. Anything beyond ASCII is an
    error rather than a guess at an encoding (UTF-8? Latin-1?): such bytes are written with
    the standard ``!!binary`` (base64). Nothing else is added: loading stays safe.
    """


def _construct_bytes(loader: yaml.SafeLoader, node: yaml.Node) -> bytes:
    text = str(loader.construct_scalar(node))
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        raise yaml.constructor.ConstructorError(
            None, None, "!bytes takes ASCII only: write other bytes as !!binary (base64)", node.start_mark
        ) from None


_SpecLoader.add_constructor("!bytes", _construct_bytes)


def _compile_block(kind: Kind, data: Any, source: str) -> MessageSpec:
    where = source
    if not isinstance(data, dict):
        raise SpecFileError(f"{where}: a {kind} block must be a YAML mapping")
    unknown = set(data) - _BLOCK_FIELDS
    if unknown:
        raise SpecFileError(f"{where}: unknown fields {sorted(unknown)} (allowed: {', '.join(sorted(_BLOCK_FIELDS))})")
    type_name = data.get("type")
    if not isinstance(type_name, str) or not type_name:
        raise SpecFileError(f"{where}: a block needs a non-empty str type")
    where = f"{where} ({type_name})"
    if kind == "message" and "." not in type_name:
        raise SpecFileError(f"{where}: message types are <protocol>.<event>")
    if kind == "scope" and "." in type_name:
        raise SpecFileError(f"{where}: scope types are bare protocol names")

    direction = data.get("direction")
    if kind == "scope":
        if direction is not None:
            raise SpecFileError(f"{where}: scope blocks have no direction (scopes travel inside envelopes)")
    elif direction not in (GATEWAY_TO_WORKER, WORKER_TO_GATEWAY):
        raise SpecFileError(f"{where}: direction must be {GATEWAY_TO_WORKER!r} or {WORKER_TO_GATEWAY!r}")
    extension = data.get("extension")
    if extension is not None and not isinstance(extension, str):
        raise SpecFileError(f"{where}: extension must be a string")

    raw_keys = data.get("keys") or {}
    if not isinstance(raw_keys, dict):
        raise SpecFileError(f"{where}: keys must be a mapping of name to type")
    fields = tuple(_compile_key(name, declared, where) for name, declared in raw_keys.items())
    declared = {name: (required, key_type) for name, required, key_type in fields}
    if len(declared) != len(fields):
        raise SpecFileError(f"{where}: a key is declared twice")
    if "type" in declared:
        raise SpecFileError(f"{where}: 'type' is implied by the block's type, don't list it in keys")

    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise SpecFileError(f"{where}: defaults must be a mapping")
    for name, value in defaults.items():
        if name not in declared or declared[name][0]:
            raise SpecFileError(f"{where}: default for {name!r}, which is not an optional key")
        problem = declared[name][1].explain(value, name)
        if problem is not None:
            raise SpecFileError(f"{where}: default {problem}")

    raw_rules = data.get("rules") or []
    if not isinstance(raw_rules, list):
        raise SpecFileError(f"{where}: rules must be a list")
    rules = tuple(_compile_rule(raw, declared, f"{where}, rule {i + 1}") for i, raw in enumerate(raw_rules))

    raw_examples = data.get("examples")
    if not isinstance(raw_examples, list) or not raw_examples:
        raise SpecFileError(f"{where}: examples must be a non-empty list (every type shows at least one)")
    examples = []
    for example in raw_examples:
        if not isinstance(example, dict) or example.get("type", type_name) != type_name:
            raise SpecFileError(f"{where}: each example is a mapping of this type ({type_name!r})")
        examples.append({"type": type_name, **example})

    return MessageSpec(
        type=type_name,
        kind=kind,
        direction=direction,
        extension=extension,
        keys={name: KeySpec(name, required, key_type.text) for name, required, key_type in fields},
        defaults=dict(defaults),
        rules=rules,
        examples=tuple(examples),
        source=source,
        _fields=fields,
        _rule_checks=tuple((rule.key, rule.check) for rule in rules),
    )


def parse_spec_markdown(text: str, source: str = "<string>") -> list[MessageSpec]:
    """Compile every ``message`` and ``scope`` block of one markdown document.

    Raises :class:`SpecFileError` naming ``source`` and the block's line on any problem.
    """
    specs = []
    for match in _FENCE_RE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        where = f"{source}:{line}"
        try:
            # _SpecLoader is a SafeLoader subclass: as safe as yaml.safe_load, plus !bytes.
            data = yaml.load(match.group(2), Loader=_SpecLoader)
        except yaml.YAMLError as exc:
            raise SpecFileError(f"{where}: invalid YAML: {exc}") from None
        kind: Kind = "message" if match.group(1) == "message" else "scope"
        specs.append(_compile_block(kind, data, where))
    return specs


def specs_directory() -> Traversable:
    """The directory holding the spec files.

    They are the package's own folder ``switchboard/specs/`` (package data when installed),
    found through the ``switchboard`` package; the path fallback serves a loader that does
    not offer resources.
    """
    package = __name__.rpartition(".")[0].rpartition(".")[0]
    if package:
        try:
            directory = resources.files(package).joinpath("specs")
            if directory.is_dir():
                return directory
        except ModuleNotFoundError:
            pass
    return Path(__file__).resolve().parent.parent / "specs"


@dataclass(frozen=True)
class _Registry:
    messages: Mapping[str, MessageSpec]
    scopes: Mapping[str, MessageSpec]
    names: frozenset[str]
    files: tuple[str, ...]


def load_specs(directory: Traversable | None = None) -> list[MessageSpec]:
    """Compile every block of every ``*.md`` in ``directory`` (default: the shipped specs).

    ``README.md`` describes the block schema and holds no blocks of its own.
    """
    directory = directory if directory is not None else specs_directory()
    if not directory.is_dir():
        raise SpecFileError(f"spec directory {directory} not found")
    specs: list[MessageSpec] = []
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".md") and entry.name != "README.md":
            specs.extend(parse_spec_markdown(entry.read_text(encoding="utf-8"), entry.name))
    return specs


# Spec files from outside ``specs/`` (a third-party plugin's own), by source name: the
# registry compiles them after the shipped ones. Filled by :func:`add_spec_file`.
_added_files: dict[str, str] = {}


def add_spec_file(spec_file: Traversable, source: str | None = None) -> list[MessageSpec]:
    """Add one spec file from outside ``specs/`` to what every validator knows; its blocks.

    For a protocol plugin shipped in its own distribution: its spec lives in its own
    package (``importlib.resources.files("switchboard_lineproto") / "lineproto.md"``), and
    the plugin registry adds it when it loads the plugin class
    (:attr:`~switchboard.gateway.plugins.ProtocolPlugin.spec`), before any socket opens.
    ``source`` names the file in errors and in each block's ``source``
    (``switchboard_lineproto/lineproto.md``; default: the file's name).

    Raises :class:`SpecFileError` when the file does not compile or specifies a type that
    is already specified (a plugin cannot redefine ``websocket.send``), and leaves the
    registry as it was. Adding the same file again is a no-op, so loading a plugin class
    twice is harmless.
    """
    name = source or spec_file.name
    try:
        text = spec_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecFileError(f"{name}: cannot read the spec file: {exc}") from None
    compiled = parse_spec_markdown(text, name)
    if not compiled:
        raise SpecFileError(f"{name}: no message or scope blocks")
    if _added_files.get(name) == text:
        return compiled
    previous = dict(_added_files)
    _added_files[name] = text
    _registry.cache_clear()
    try:
        _registry()  # compile now: a clash with a known type fails here, at start-up
    except SpecFileError:
        _added_files.clear()
        _added_files.update(previous)
        _registry.cache_clear()
        raise
    return compiled


def _all_specs() -> list[MessageSpec]:
    specs = load_specs()
    for name, text in _added_files.items():
        specs.extend(parse_spec_markdown(text, name))
    return specs


@functools.lru_cache(maxsize=1)
def _registry() -> _Registry:
    """All specs, compiled once per process (validation is on plugin hot paths)."""
    messages: dict[str, MessageSpec] = {}
    scopes: dict[str, MessageSpec] = {}
    for spec in _all_specs():
        table = scopes if spec.kind == "scope" else messages
        if spec.type in table:
            raise SpecFileError(f"{spec.source}: {spec.type} is already specified in {table[spec.type].source}")
        table[spec.type] = spec
    files = tuple(sorted({spec.source.partition(":")[0] for spec in (*messages.values(), *scopes.values())}))
    return _Registry(messages, scopes, frozenset(messages) | frozenset(scopes), files)


def reload_specs() -> None:
    """Forget the compiled specs; the next call reads ``specs/`` again (tests, spec authors).

    Files added with :func:`add_spec_file` stay added (compiled again from their text).
    """
    _registry.cache_clear()


# -- public API -------------------------------------------------------------------------


def known_types(kind: Kind | None = None) -> frozenset[str]:
    """Every specified type name; ``kind`` narrows to message types or scope types."""
    registry = _registry()
    if kind is None:
        return registry.names
    return frozenset(registry.scopes if kind == "scope" else registry.messages)


def spec_for(type_name: str) -> MessageSpec:
    """The spec of a message type (``websocket.send``) or scope type (``websocket``).

    Message types always contain a dot and scope types never do, so one name space serves
    both. Raises ``KeyError`` for an unspecified type.
    """
    registry = _registry()
    spec = registry.messages.get(type_name) or registry.scopes.get(type_name)
    if spec is None:
        raise KeyError(f"{type_name!r} is not specified in any of {', '.join(registry.files)}")
    return spec


def _type_of(obj: Any, what: str) -> str:
    if not isinstance(obj, dict):
        raise SpecError(f"a {what} must be a dict, got {_describe(obj)}")
    type_name = obj.get("type")
    if not isinstance(type_name, str):
        raise SpecError(f"a {what} needs a str 'type' key, got {_describe(type_name)}", key="type")
    return type_name


def validate_message(message: Any, *, direction: str | None = None, allow_unknown: bool = False) -> None:
    """Raise :class:`SpecError` unless ``message`` matches the spec of its ``type``.

    ``direction`` (``"worker -> gateway"`` or ``"gateway -> worker"``) additionally requires
    the type to travel that way: a plugin checking a worker's reply passes
    ``WORKER_TO_GATEWAY`` so a consumer that sends ``websocket.receive`` learns its mistake.

    An unspecified type is an error unless ``allow_unknown``: group messages such as
    ``chat.message`` are user-defined and have no spec, so code that validates what a
    connection forwards to the worker pool accepts them (specified types are still checked).
    """
    type_name = _type_of(message, "message")
    registry = _registry()
    spec = registry.messages.get(type_name)
    if spec is None:
        if allow_unknown:
            return
        if type_name in registry.scopes:
            raise SpecError(f"{type_name!r} is a scope type, not a message type", type_name=type_name, key="type")
        protocol = type_name.partition(".")[0]
        siblings = sorted(name for name in registry.messages if name.partition(".")[0] == protocol)
        hint = f"; {protocol} types are {', '.join(siblings)}" if siblings else ""
        raise SpecError(f"unknown message type {type_name!r}{hint}", type_name=type_name, key="type")
    if direction is not None:
        wanted = _DIRECTIONS.get(direction)
        if wanted is None:
            raise ValueError(f"direction must be {GATEWAY_TO_WORKER!r} or {WORKER_TO_GATEWAY!r}, not {direction!r}")
        if spec.direction != wanted:
            raise SpecError(f"{type_name}: travels {spec.direction}, not {wanted}", type_name=type_name, key="type")
    spec.validate(message)


def validate_scope(scope: Any) -> None:
    """Raise :class:`SpecError` unless ``scope`` matches the spec of its ``type``.

    This is the scope as it crosses the layer, so it includes ``reply_channel`` (added by
    ``Gateway.open_connection``): validate after opening the connection.
    """
    type_name = _type_of(scope, "scope")
    spec = _registry().scopes.get(type_name)
    if spec is None:
        raise SpecError(f"unknown scope type {type_name!r}", type_name=type_name, key="type")
    spec.validate(scope)


def validate_envelope(envelope: Any) -> None:
    """Check a ``switchboard.event`` envelope, then its scope and its event.

    The event may be a user-defined message (a group message forwarded by the gateway), so
    unknown types pass; but a type of the connection's own protocol (``websocket.*`` for a
    websocket scope) is never forwarded, so it must be a specified gateway -> worker event.
    """
    if _type_of(envelope, "envelope") != EVENT_TYPE:
        raise SpecError(f"an envelope has type {EVENT_TYPE!r}, got {envelope['type']!r}", key="type")
    validate_message(envelope)
    scope = envelope.get("scope")
    if scope is None:
        # Sent to the claiming worker's own channel, which has the scope (specs/layer.md).
        if envelope.get("claim"):
            raise SpecError(f"{EVENT_TYPE}: a claim envelope must carry the scope", type_name=EVENT_TYPE, key="scope")
        event = envelope["event"]
        try:
            event_type = event.get("type")
            spec = _registry().messages.get(event_type) if isinstance(event_type, str) else None
            if spec is not None:
                validate_message(event, direction=GATEWAY_TO_WORKER)
            else:
                validate_message(event, allow_unknown=True)
        except SpecError as exc:
            raise SpecError(f"{EVENT_TYPE}: key 'event': {exc}", type_name=EVENT_TYPE, key="event") from None
        return
    try:
        validate_scope(scope)
    except SpecError as exc:
        raise SpecError(f"{EVENT_TYPE}: key 'scope': {exc}", type_name=EVENT_TYPE, key="scope") from None
    if scope.get("reply_channel") != envelope["connection"]:
        raise SpecError(
            f"{EVENT_TYPE}: connection {envelope['connection']!r} is not the scope's reply_channel "
            f"{scope.get('reply_channel')!r}",
            type_name=EVENT_TYPE,
            key="connection",
        )
    event = envelope["event"]
    event_type = event.get("type")
    try:
        if isinstance(event_type, str) and event_type.startswith(scope["type"] + "."):
            validate_message(event, direction=GATEWAY_TO_WORKER)
        else:
            validate_message(event, allow_unknown=True)
    except SpecError as exc:
        raise SpecError(f"{EVENT_TYPE}: key 'event': {exc}", type_name=EVENT_TYPE, key="event") from None


def validate_serializable(value: Any, path: str = "message") -> None:
    """Raise :class:`SpecError` unless ``value`` crosses the layer intact (``specs/layer.md``).

    Allowed: str (valid Unicode), bytes, int in [-2**63, 2**64 - 1], float, bool, None, list
    (tuples become lists) and dict with str keys, nested freely. This matters most for
    user-defined messages, which no spec covers: msgpack packs a dict with int keys but
    refuses to unpack it, so the receiving process, not the sender, would fail.
    """
    if value is None or isinstance(value, bytes | bool | float):
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise SpecError(f"{path} is a str with a lone surrogate, which UTF-8 (and msgpack) cannot encode") from None
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise SpecError(f"{path} is an int outside the 64-bit range msgpack carries")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            validate_serializable(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SpecError(f"{path} has a {type(key).__name__} key {key!r}: layer maps need str keys")
            validate_serializable(item, f"{path}[{key!r}]")
        return
    raise SpecError(f"{path} is a {type(value).__name__}, which the layer cannot carry")
