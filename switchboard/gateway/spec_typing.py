"""Python types for every message and scope in ``switchboard/specs/``, generated from the specs.

The specs are the one source of truth for what crosses the layer; the validator in
:mod:`switchboard.gateway.specs` checks messages against them at run time. This module turns
the same compiled blocks into ``TypedDict`` source, so that a plugin or consumer that builds
``{"type": "websocket.send", "txt": ...}`` is a type error before it is a runtime one — the
way uvicorn's ``_types.py`` and asgiref's ``typing`` module type ASGI messages.

The generated file is :mod:`switchboard.messages`. It is committed (readers and type
checkers need no build step) and ``tests/specs/test_spec_typing.py`` fails when it no longer
matches the specs. After editing a spec, regenerate it::

    python -m switchboard.gateway.spec_typing --write

A plugin shipped in its own distribution types its own spec the same way, into a module
beside it (docs/writing-a-plugin.md)::

    python -m switchboard.gateway.spec_typing --spec switchboard_lineproto/lineproto.md \
        --output switchboard_lineproto/messages.py --write

Mapping of spec types (specs/README.md, *Types*) to Python:

- ``list[T]`` becomes ``Sequence[T]`` and ``list[T1, T2]`` ``Sequence[T1 | T2]``: the
  validator accepts tuples as well as lists (Django builds headers as tuples), and a fixed
  arity has no ``Sequence`` form (unpacking ``name, value = header`` still type-checks);
- ``dict[str, T]`` becomes ``Mapping[str, T]`` (read-only use is the common case, and
  ``Mapping`` accepts a ``dict`` of a narrower value type where ``dict`` would not);
- ``channel`` becomes ``str`` (the name rules are checked at the layer boundary);
- a nested mapping type becomes its own ``TypedDict`` named after its owner and key;
- an optional key (``name?``) becomes ``NotRequired[...]``. TypedDicts are open: the specs
  allow unknown keys, and so do these types.
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from .specs import (
    GATEWAY_TO_WORKER,
    WORKER_TO_GATEWAY,
    MessageSpec,
    _Dict,
    _List,
    _Struct,
    _Type,
    _Union,
    load_specs,
    parse_spec_markdown,
)

#: Where the generated module lives, relative to the ``switchboard`` package.
GENERATED_MODULE = "messages.py"

_ATOM_NAMES = {
    "str": "str",
    "bytes": "bytes",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "None": "None",
    "list": "Sequence[Any]",
    "dict": "Mapping[str, Any]",
    "any": "Any",
    "channel": "str",
}


def class_name(type_name: str, kind: str) -> str:
    """``http.response.start`` -> ``HttpResponseStartEvent``; scope ``websocket`` -> ``WebsocketScope``."""
    words = type_name.replace("-", ".").replace("_", ".").split(".")
    stem = "".join(word[:1].upper() + word[1:] for word in words if word)
    return stem + ("Scope" if kind == "scope" else "Event")


class _Renderer:
    """Renders compiled specs as one Python module of TypedDicts (nested ones first)."""

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self.names: set[str] = set()

    def annotation(self, key_type: _Type, owner: str, key: str) -> str:
        if isinstance(key_type, _Union):
            return " | ".join(self.annotation(option, owner, key) for option in key_type.options)
        if isinstance(key_type, _Struct):
            return self.typed_dict(owner + _camel(key), key_type.fields, doc=f"The ``{key}`` of :class:`{owner}`.")
        if isinstance(key_type, _List) and key_type.fixed is not None:
            items = _unique(self.annotation(item, owner, key) for item in key_type.fixed)
            return f"Sequence[{' | '.join(items)}]"
        if isinstance(key_type, _List) and key_type.item is not None:
            return f"Sequence[{self.annotation(key_type.item, owner, key)}]"
        if isinstance(key_type, _Dict) and key_type.value_type is not None:
            return f"Mapping[str, {self.annotation(key_type.value_type, owner, key)}]"
        return _ATOM_NAMES[key_type.text]

    def typed_dict(self, name: str, fields: Iterable[tuple[str, bool, _Type]], *, doc: str, literal: str | None = None) -> str:
        if name in self.names:
            raise ValueError(f"two specs would both generate a type named {name}")
        self.names.add(name)
        items: list[tuple[str, str]] = []
        if literal is not None:
            items.append(("type", f'Literal["{literal}"]'))
        for key, required, key_type in fields:
            if key == "type":
                raise ValueError(f"{name}: 'type' is implied, not a key of its own")
            text = self.annotation(key_type, name, key)
            items.append((key, text if required else f"NotRequired[{text}]"))
        if all(key.isidentifier() and not keyword.iskeyword(key) for key, _text in items):
            lines = [f"class {name}(TypedDict):", f'    """{doc}"""', ""]
            lines += [f"    {key}: {text}" for key, text in items] or ["    pass"]
        else:
            # A key such as "from" (SMS, e-mail) is no identifier: the functional form takes it.
            lines = [f"{name} = TypedDict(", f'    "{name}",', "    {"]
            lines += [f'        "{key}": {text},' for key, text in items]
            lines += ["    },", ")", f'{name}.__doc__ = """{doc}"""']
        self.blocks.append("\n".join(lines))
        return name

    def spec(self, spec: MessageSpec) -> str:
        where = spec.source.partition(":")[0]
        where = where if "/" in where else f"specs/{where}"  # a plugin's own spec names its package
        travels = f" ({spec.direction})" if spec.direction else ""
        doc = f"``{spec.type}``{' scope' if spec.kind == 'scope' else ''}{travels}: {where}."
        return self.typed_dict(class_name(spec.type, spec.kind), spec._fields, doc=doc, literal=spec.type)


def _camel(key: str) -> str:
    return "".join(word[:1].upper() + word[1:] for word in key.split("_") if word)


def _unique(items: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def render(specs: Iterable[MessageSpec] | None = None, *, source: str | None = None) -> str:
    """The source of :mod:`switchboard.messages` for ``specs`` (default: the shipped specs).

    ``source`` (``switchboard_lineproto/lineproto.md``) names one spec file outside
    ``switchboard/specs/`` whose blocks ``specs`` are: the header then says so and how to
    regenerate the module.
    """
    ordered = sorted(specs if specs is not None else load_specs(), key=lambda s: (s.protocol, s.kind != "scope", s.type))
    renderer = _Renderer()
    unions: dict[str, list[str]] = {}
    for spec in ordered:
        name = renderer.spec(spec)
        protocol = class_name(spec.protocol, "scope").removesuffix("Scope")
        if spec.kind == "scope":
            unions.setdefault(f"{protocol}Scopes", []).append(name)
        elif spec.direction == GATEWAY_TO_WORKER:
            unions.setdefault(f"{protocol}ToWorker", []).append(name)
        elif spec.direction == WORKER_TO_GATEWAY:
            unions.setdefault(f"{protocol}ToGateway", []).append(name)
    alias_lines = []
    for alias, members in sorted(unions.items()):
        if alias.endswith("Scopes"):
            continue
        line = f"{alias} = {' | '.join(members)}"
        if len(line) <= 130:
            alias_lines.append(line)
        else:
            alias_lines.append(f"{alias} = (\n" + "".join(f"    {'| ' if i else ''}{m}\n" for i, m in enumerate(members)) + ")")
    body = "\n\n\n".join(renderer.blocks)
    if source is None:
        docstring = (
            "Types of every message and scope in ``switchboard/specs/``: generated, do not edit.\n\n"
            "Made by :mod:`switchboard.gateway.spec_typing` from the spec blocks; regenerate with\n"
            "``python -m switchboard.gateway.spec_typing --write`` after editing a spec (a test fails\n"
            "until you do). "
        )
    else:
        docstring = (
            f"Types of every message and scope in ``{source}``: generated, do not edit.\n\n"
            "Made by :mod:`switchboard.gateway.spec_typing` from the spec blocks; regenerate it after\n"
            "editing the spec (a test fails until you do)::\n\n"
            f"    python -m switchboard.gateway.spec_typing --spec {source} --output <this file> --write\n\n"
        )
    # Only the names the body uses (a small spec needs no Mapping): the module stays lint-clean.
    used = set(re.findall(r"\b\w+\b", body))
    abc_names = [name for name in ("Mapping", "Sequence") if name in used]
    typing_names = [name for name in ("Any", "Literal", "NotRequired", "TypedDict") if name in used]
    header = (
        f'"""{docstring}'
        "``<Protocol>ToWorker`` / ``<Protocol>ToGateway`` are the unions of the\n"
        "messages travelling each way.\n"
        '"""\n\n'
        "# No ``from __future__ import annotations``: TypedDict reads NotRequired[] at class creation.\n"
        + (f"from collections.abc import {', '.join(abc_names)}\n" if abc_names else "")
        + f"from typing import {', '.join(typing_names)}\n"
    )
    return f"{header}\n\n{body}\n\n\n" + "\n".join(alias_lines) + "\n"


def generated_path() -> Path:
    return Path(__file__).resolve().parent.parent / GENERATED_MODULE


def spec_source_name(spec_file: Path) -> str:
    """How a plugin's spec file is named in errors and docstrings: ``<package>/<file>``.

    The same name the plugin registry gives it (``check_plugin_spec``), so a block's
    ``source`` reads the same at run time and in the generated module.
    """
    return f"{spec_file.resolve().parent.name}/{spec_file.name}"


def render_file(spec_file: Path) -> str:
    """The TypedDict module for one spec file outside ``switchboard/specs/`` (a plugin's)."""
    source = spec_source_name(spec_file)
    return render(parse_spec_markdown(spec_file.read_text(encoding="utf-8"), source), source=source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m switchboard.gateway.spec_typing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write the module instead of printing it")
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed module differs from the specs")
    parser.add_argument("--spec", type=Path, help="one spec file outside switchboard/specs/ (a plugin's own); needs --output")
    parser.add_argument("--output", type=Path, help=f"the module to write or check (default: switchboard/{GENERATED_MODULE})")
    args = parser.parse_args(argv)
    if args.spec is not None and args.output is None:
        parser.error("--spec needs --output: the plugin's own module, never switchboard/messages.py")
    source = render_file(args.spec) if args.spec is not None else render()
    path = args.output if args.output is not None else generated_path()
    if args.check:
        if not path.exists() or path.read_text(encoding="utf-8") != source:
            print(f"{path} is out of date with its spec: regenerate it with --write", file=sys.stderr)
            return 1
        return 0
    if args.write:
        path.write_text(source, encoding="utf-8")
        print(f"wrote {path}")
        return 0
    sys.stdout.write(source)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
