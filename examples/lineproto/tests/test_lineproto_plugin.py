"""The line-protocol plugin in process: real gateway core, real worker, real TCP clients.

Lines in, through the worker pool to the consumer and back out as lines; and each limit
(max_line_length, idle_timeout, max_connections, max_pending_bytes) and each kind of bad
reply, with what the client sees, what the consumer gets, and the counter that records it.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from lineproto_consumers import EVENTS, disconnects
from lineproto_support import WAIT, line_options
from support.waiting import wait_until

from switchboard.gateway.config import ConfigError
from switchboard.gateway.plugins import STANDARD_COUNTERS


async def test_lines_go_through_a_worker_and_come_back_in_order(stack: Any, clients: Any) -> None:
    running = await stack()
    client = await clients(running.address)
    assert await client.line() == "HELLO"  # the consumer's answer to line.connect
    await client.send("one", "two", "", "three")
    await client.send("crlf", ending=b"\r\n")
    assert [await client.line() for _ in range(5)] == ["ONE", "TWO", "", "THREE", "CRLF"]
    await client.close()
    await wait_until(lambda: disconnects() == ["client_closed"], what="line.disconnect")
    kinds = [event["type"] for _, event in EVENTS]
    assert kinds == ["line.connect"] + ["line.received"] * 5 + ["line.disconnect"]
    assert len({channel for channel, _ in EVENTS}) == 1  # one sticky connection, one instance
    stats = running.plugin.stats()
    assert stats["connections_opened"] == 1 and stats["messages_in"] == 5 and stats["messages_out"] == 6
    await wait_until(lambda: running.plugin.stats()["open_connections"] == 0, what="the session to end")


async def test_every_standard_counter_is_there_from_the_start(stack: Any) -> None:
    running = await stack()
    assert all(running.plugin.stats()[name] == 0 for name in STANDARD_COUNTERS)


async def test_a_line_over_max_line_length_closes_with_an_error_line(stack: Any, clients: Any) -> None:
    running = await stack(max_line_length=16)
    client = await clients(running.address)
    assert await client.line() == "HELLO"
    await client.send("x" * 16)  # exactly the limit passes
    assert await client.line() == "X" * 16
    await client.send("y" * 17)
    assert await client.closed() == b"ERROR line too long (max 16 bytes)\n"
    await wait_until(lambda: disconnects() == ["line_too_long"], what="line.disconnect")
    assert running.plugin.stats()["lines_refused_too_long"] == 1
    assert [e["text"] for _, e in EVENTS if e["type"] == "line.received"] == ["x" * 16]


async def test_a_huge_line_without_a_terminator_is_cut_off_too(stack: Any, clients: Any) -> None:
    """No newline ever: the reader's limit ends it, nothing is buffered beyond it."""
    running = await stack(max_line_length=1024)
    client = await clients(running.address)
    assert await client.line() == "HELLO"
    client.writer.write(b"z" * 200_000)
    assert await client.closed() == b"ERROR line too long (max 1024 bytes)\n"
    assert running.plugin.stats()["lines_refused_too_long"] == 1


async def test_a_reply_that_breaks_the_spec_is_dropped_and_counted(stack: Any, clients: Any) -> None:
    running = await stack()
    client = await clients(running.address)
    assert await client.line() == "HELLO"
    await client.send("BAD", "WRONGWAY", "TWOLINES", "still here")
    assert await client.line() == "STILL HERE"  # the three bad replies never reached the client
    assert running.plugin.stats()["replies_invalid"] == 3
    assert running.plugin.stats()["messages_out"] == 2


async def test_the_spec_reason_is_logged(stack: Any, clients: Any, caplog: pytest.LogCaptureFixture) -> None:
    running = await stack()
    client = await clients(running.address)
    assert await client.line() == "HELLO"
    await client.send("BAD", "ok")
    assert await client.line() == "OK"
    assert "line.send: key text must be str, got int 42" in caplog.text
    assert running.plugin.stats()["replies_invalid"] == 1


async def test_a_line_that_is_not_utf8_gets_an_error_line_and_the_connection_stays(stack: Any, clients: Any) -> None:
    running = await stack()
    client = await clients(running.address)
    assert await client.line() == "HELLO"
    await client.send(b"\xff\xfe", "fine")
    assert await client.line() == "ERROR line is not UTF-8"
    assert await client.line() == "FINE"
    assert running.plugin.stats()["lines_dropped_not_utf8"] == 1


async def test_an_idle_client_is_closed_with_an_error_line(stack: Any, clients: Any) -> None:
    running = await stack(idle_timeout=0.3)
    client = await clients(running.address)
    assert await client.closed() == b"HELLO\nERROR idle timeout\n"
    await wait_until(lambda: disconnects() == ["idle_timeout"], what="line.disconnect")
    assert running.plugin.stats()["idle_timeouts"] == 1


async def test_past_max_connections_a_client_is_turned_away(stack: Any, clients: Any) -> None:
    running = await stack(max_connections=1)
    first = await clients(running.address)
    assert await first.line() == "HELLO"
    second = await clients(running.address)
    assert await second.closed() == b"ERROR too many connections\n"
    await first.send("first still works")
    assert await first.line() == "FIRST STILL WORKS"
    stats = running.plugin.stats()
    assert stats["connections_refused"] == 1 and stats["connections_opened"] == 1
    assert [event["type"] for _, event in EVENTS].count("line.connect") == 1  # never reached a worker


async def test_a_consumer_closes_with_a_last_line(stack: Any, clients: Any) -> None:
    running = await stack()
    client = await clients(running.address)
    await client.send("QUIT")
    assert await client.closed() == b"HELLO\nBYE\n"
    await wait_until(lambda: disconnects() == ["worker_closed"], what="line.disconnect")
    assert running.plugin.stats()["replies_invalid"] == 0


async def test_stopping_tells_the_clients_and_the_consumers(stack: Any, clients: Any) -> None:
    running = await stack(shutdown_grace=0.2)
    client = await clients(running.address)
    assert await client.line() == "HELLO"
    address = running.address
    await running.plugin.stop(5.0)
    assert await client.closed() == b"ERROR server shutting down\n"
    assert running.plugin.stats()["shutdown_closes"] == 1
    await wait_until(lambda: disconnects() == ["shutdown"], what="line.disconnect")
    with pytest.raises(OSError):
        await asyncio.open_connection(*address)


async def test_a_client_that_reads_nothing_is_cut_off(stack: Any) -> None:
    """Replies pile up past max_pending_bytes: the socket is aborted, not buffered for."""
    running = await stack(max_pending_bytes=64 * 1024, max_line_length=65536)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, running.address)
        await asyncio.get_running_loop().sock_sendall(sock, b"FLOOD 400 60000\n")  # 24 MB, never read
        await wait_until(lambda: running.plugin.stats()["slow_readers"] == 1, timeout=WAIT, what="slow reader")
        await wait_until(lambda: disconnects() == ["slow_reader"], what="line.disconnect")
    finally:
        sock.close()
    assert running.plugin.stats()["open_connections"] == 0


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"bind": []}, "bind: give at least one"),
        ({"max_line_length": 0}, "max_line_length must be between 1 and"),
        ({"max_line_length": 2**21}, "max_line_length must be between 1 and 1048576"),
        ({"idle_timeout": 0}, "idle_timeout must be above 0"),
        ({"line_ending": "\r"}, "line_ending must be"),
        ({"max_connections": "many"}, "max_connections: expected an integer"),
        ({"colour": "blue"}, "unknown option"),
    ],
)
def test_bad_options_fail_before_start(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        line_options(**options)
