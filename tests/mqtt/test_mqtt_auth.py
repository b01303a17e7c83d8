"""Username/password against a private Mosquitto that refuses anonymous clients."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.mosquitto import MosquittoServer, mosquitto_binary
from support.waiting import wait_until

SECRET = "s3cret-do-not-log"
WRONG = "n0t-the-passw0rd-either"


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[MosquittoServer]:
    passwd = shutil.which("mosquitto_passwd")
    if mosquitto_binary() is None or passwd is None:
        pytest.skip("mosquitto and mosquitto_passwd are needed")
    password_file = tmp_path / "passwd"
    subprocess.run([passwd, "-c", "-b", str(password_file), "gateway", SECRET], check=True, capture_output=True)
    broker = MosquittoServer(tmp_path, f"password_file {password_file}\n", anonymous=False)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


async def test_credentials_accepted(serve: Any, auth_broker: MosquittoServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        stack = await serve(None, brokers=[auth_broker.url], username="gateway", password=SECRET)
        assert stack.plugin.connected
        await stack.close()
    assert SECRET not in caplog.text


async def test_wrong_password_is_refused_and_counted(
    serve: Any, auth_broker: MosquittoServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        stack = await serve(None, brokers=[auth_broker.url], username="gateway", password=WRONG, connect_timeout=0.5)
        await wait_until(lambda: stack.plugin.stats()["connect_refused"] >= 1, what="a refused CONNECT")
        assert not stack.plugin.connected and stack.plugin.stats()["disconnects"] == 0
        await stack.close()
    assert WRONG not in caplog.text
    assert "connection refused" in caplog.text
