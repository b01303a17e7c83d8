"""docs/config.md stays true: every option of every section is listed, and its TOML parses."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from switchboard.gateway.config import (
    ConsoleOptions,
    GatewayOptions,
    MetricsOptions,
    TracingOptions,
    WorkerOptions,
    from_toml,
)
from switchboard.gateway.layers.core import LayerOptions
from switchboard.gateway.layers.redis import RedisStorage

CONFIG_MD = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def section(title: str) -> str:
    """The text of the ``### title`` section."""
    text = CONFIG_MD.read_text()
    start = text.index(f"### {title}\n")
    end = text.find("\n#", start + 1)
    return text[start : end if end != -1 else None]


def first_column(text: str) -> set[str]:
    """The backticked names in the first column of the section's table rows."""
    names: set[str] = set()
    for row in re.findall(r"^\| (.+?) \|", text, re.MULTILINE):
        names.update(re.findall(r"`([a-z_]+)`", row))
    return names


@pytest.mark.parametrize(
    ("title", "options"),
    [
        ("`WORKER`", WorkerOptions),
        ("`GATEWAY`", GatewayOptions),
        ("`METRICS`", MetricsOptions),
        ("`CONSOLE`", ConsoleOptions),
        ("`TRACING`", TracingOptions),
    ],
)
def test_every_option_of_a_section_is_listed(title: str, options: type) -> None:
    fields = {field.name for field in dataclasses.fields(options) if field.init}
    assert first_column(section(title)) >= fields


def test_every_layer_option_is_listed() -> None:
    listed = first_column(section("`LAYER`"))
    assert listed >= {field.name for field in dataclasses.fields(LayerOptions)}
    redis = {name for name, parameter in inspect.signature(RedisStorage).parameters.items()
             if parameter.kind is not inspect.Parameter.VAR_KEYWORD}
    assert listed >= redis


def test_the_toml_examples_parse(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", CONFIG_MD.read_text(), re.DOTALL)
    assert blocks
    for index, block in enumerate(blocks):
        path = tmp_path / f"example{index}.toml"
        path.write_text(block)
        from_toml(path)
