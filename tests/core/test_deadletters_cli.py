"""``switchboard deadletters list | show | replay | drop`` against dead letters in Redis.

The dead letters are made the real way (a receiver fails each delivery past
``max_deliveries``); the command runs through ``switchboard.gateway.cli.main`` with a TOML
config naming the same Redis prefix, as an operator would run it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.processes import redis_reachable

from switchboard.gateway.cli import main
from switchboard.gateway.layers import ChannelLayer, build_layer
from switchboard.gateway.layers.durable import delivery_of

pytestmark = [pytest.mark.timeout(60), pytest.mark.redis]

REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(autouse=True)
def root_logging_kept() -> Iterator[None]:
    """Put the root logger back as it was after ``main`` configured it for "its" process.

    ``main`` sets up logging as a CLI process should (``logs.setup_logging``: INFO, one
    handler on stderr). Here the process is pytest's and stderr is this test's capture,
    closed after it: left in place, that handler made every later test's INFO record a
    "--- Logging error --- I/O operation on closed file" on the console.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    if not redis_reachable():
        pytest.skip("Redis is not reachable")
    prefix = f"sbtest:deadletters:{secrets.token_hex(4)}:"
    config = {"hosts": [REDIS_URL], "prefix": prefix, "durable": {"tasks": {"max_deliveries": 1}}}
    toml = tmp_path / "switchboard.toml"
    toml.write_text(
        "[layer]\nbackend = \"redis\"\n[layer.config]\n"
        f"hosts = [\"{REDIS_URL}\"]\nprefix = \"{prefix}\"\n[layer.config.durable.tasks]\nmax_deliveries = 1\n"
    )
    asyncio.run(_make_dead_letters(config))
    yield {"config": config, "toml": str(toml)}
    asyncio.run(_flush(config))


def _layer(config: dict[str, Any]) -> ChannelLayer:
    return build_layer({"BACKEND": "redis", "CONFIG": {**config, "block_timeout": 0.1}})


async def _make_dead_letters(config: dict[str, Any]) -> None:
    layer = _layer(config)
    try:
        messages = [
            {"type": "thumbnail.make", "n": 0},
            {"type": "thumbnail.make", "n": 1, "image": b"\x89PNG\r\n"},
            {"type": "thumbnail.make", "n": 2},
        ]
        for message in messages:
            await layer.send("tasks", message)
        receiver = layer.durable.receiver(["tasks"], "worker.cli")
        failed = 0
        while failed < 3:
            for _channel, message in await asyncio.wait_for(receiver.get_batch(), 20):
                delivery = delivery_of(message)
                assert delivery is not None
                receiver.fail(delivery, f"Traceback (most recent call last):\n  File x\nValueError: bad image {message['n']}")
                failed += 1
        await receiver.flush()
        await receiver.close()
        for _ in range(200):
            if len(await layer.durable.dead_letters("tasks")) == 3:
                break
            await asyncio.sleep(0.05)
    finally:
        await layer.close()


async def _flush(config: dict[str, Any]) -> None:
    layer = _layer(config)
    await layer.flush()
    await layer.close()


async def _info(config: dict[str, Any]) -> tuple[int, int]:
    layer = _layer(config)
    try:
        return await layer.durable.info("tasks")
    finally:
        await layer.close()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["deadletters", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_show_replay_drop(setup: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    toml = setup["toml"]
    code, out, _err = run(capsys, "list", "--config", toml)
    assert code == 0 and out.split() == ["CHANNEL", "DEAD", "tasks", "3"]

    code, out, _err = run(capsys, "list", "tasks", "--config", toml)
    assert code == 0
    rows = out.strip().splitlines()[1:]
    assert len(rows) == 3
    assert all("thumbnail.make" in row and "ValueError: bad image" in row for row in rows)

    code, out, _err = run(capsys, "list", "tasks", "--json", "--config", toml)
    letters = json.loads(out)["dead_letters"]  # in the order they failed
    assert sorted(letter["message"]["n"] for letter in letters) == [0, 1, 2]
    with_image = next(letter for letter in letters if letter["message"]["n"] == 1)
    assert with_image["message"]["image"] == {"$bytes": "iVBORw0K"}
    assert all(letter["deliveries"] == 1 and letter["event_id"].startswith("tasks:") for letter in letters)

    code, out, _err = run(capsys, "list", "tasks", "--limit", "1", "--after", letters[0]["id"], "--config", toml)
    assert code == 0 and letters[1]["id"] in out and letters[0]["id"] not in out

    code, out, _err = run(capsys, "show", "tasks", with_image["id"], "--config", toml)
    assert code == 0
    assert "Traceback (most recent call last):" in out and "ValueError: bad image 1" in out
    assert '"type": "thumbnail.make"' in out and with_image["event_id"] in out

    code, out, _err = run(capsys, "replay", "tasks", letters[0]["id"], "--config", toml)
    assert (code, out.strip()) == (0, "replayed 1 dead letter(s) onto tasks")
    assert asyncio.run(_info(setup["config"])) == (1, 0)

    code, out, _err = run(capsys, "drop", "tasks", "--all", "--json", "--config", toml)
    assert code == 0 and json.loads(out) == {"dropped": 2}
    code, out, _err = run(capsys, "list", "--config", toml)
    assert out.strip() == "no dead letters"


def test_mistakes_get_clear_errors(setup: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    toml = setup["toml"]
    code, _out, err = run(capsys, "replay", "tasks", "--config", toml)
    assert code == 2 and "--all" in err
    code, _out, err = run(capsys, "list", "chat", "--config", toml)
    assert code == 2 and "not a durable channel" in err
    code, _out, err = run(capsys, "show", "tasks", "1-1", "--config", toml)
    assert code == 1 and "no dead letter 1-1" in err
    memory = tmp_path / "memory.toml"
    memory.write_text('[layer]\nbackend = "memory"\n')
    code, _out, err = run(capsys, "list", "--config", str(memory))
    assert code == 2 and "in-memory layer" in err
