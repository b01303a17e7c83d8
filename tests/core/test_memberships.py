"""The gateway keeps its connections' group memberships true in the layer.

Over the in-memory layer: the gateway learns every ``group_add`` / ``group_discard`` of
its connections from the layer, drops a closed connection's memberships, re-adds them all
when the layer loses its data (a flush here; a real Redis restart in
tests/reliability/test_rel_core_faults.py), and refreshes them so that an open connection
never passes ``group_expiry``.
"""

from __future__ import annotations

import time

from support.waiting import wait_until

from switchboard.gateway.layers import ChannelLayer, build_layer
from switchboard.gateway.server import Gateway

from .test_gateway_worker import Delivered


async def members(layer: ChannelLayer, group: str) -> list[str]:
    return sorted(await layer.storage.group_members(group, time.time(), layer.group_expiry))


async def members_are(layer: ChannelLayer, group: str, expected: list[str]) -> bool:
    return await members(layer, group) == sorted(expected)


async def test_gateway_learns_memberships_and_drops_them_when_the_connection_closes(layer: ChannelLayer) -> None:
    gateway = Gateway(layer)
    await gateway.start()
    try:
        stays = gateway.open_connection({"type": "websocket", "path": "/"}, Delivered(), sticky=True)
        leaves = gateway.open_connection({"type": "websocket", "path": "/"}, Delivered(), sticky=True)
        for connection in (stays, leaves):
            await layer.group_add("room", connection.channel)
            await layer.group_add("lobby", connection.channel)
        await wait_until(lambda: stays.groups == {"room", "lobby"} and leaves.groups == {"room", "lobby"}, what="notices")
        # The consumer leaves one group itself: the gateway forgets it too.
        await layer.group_discard("lobby", stays.channel)
        await wait_until(lambda: stays.groups == {"room"}, what="the discard notice")
        # A connection closing takes its memberships along, whatever its consumer did.
        gateway.close_connection(leaves)
        await wait_until(lambda: members_are(layer, "room", [stays.channel]), what="the closed connection to leave 'room'")
        assert await members(layer, "lobby") == []
    finally:
        await gateway.stop()


async def test_a_late_join_of_a_closed_connection_is_dropped(layer: ChannelLayer) -> None:
    """The consumer's group_add reached the layer after the client left: the gateway drops it."""
    gateway = Gateway(layer)
    await gateway.start()
    try:
        connection = gateway.open_connection({"type": "websocket", "path": "/"}, Delivered(), sticky=True)
        gateway.close_connection(connection)
        await layer.group_add("room", connection.channel)
        await wait_until(lambda: members_are(layer, "room", []), what="the late membership to be dropped")
    finally:
        await gateway.stop()


async def test_memberships_the_layer_lost_are_restored() -> None:
    layer = build_layer({"CONFIG": {"block_timeout": 0.05}})
    gateway = Gateway(layer, membership_check_interval=0.05)
    await gateway.start()
    try:
        connections = [gateway.open_connection({"type": "websocket", "path": "/"}, Delivered(), sticky=True) for _ in range(3)]
        for connection in connections:
            await layer.group_add("room", connection.channel)
        await layer.group_add("room", "test.not-a-connection")
        await wait_until(lambda: all(c.groups == {"room"} for c in connections), what="notices")
        await layer.storage.flush()  # what a Redis restart without persistence does
        expected = [c.channel for c in connections]
        await wait_until(lambda: members_are(layer, "room", expected), what="the memberships to come back")
        assert gateway.stats.layer_data_lost == 1
        assert gateway.stats.memberships_restored == 3
    finally:
        await gateway.stop()
        await layer.close()


async def test_open_connections_never_expire_from_their_groups() -> None:
    layer = build_layer({"CONFIG": {"block_timeout": 0.05, "group_expiry": 1.0}})
    gateway = Gateway(layer, membership_check_interval=0.05)
    await gateway.start()
    try:
        connection = gateway.open_connection({"type": "websocket", "path": "/"}, Delivered(), sticky=True)
        await layer.group_add("room", connection.channel)
        await layer.group_add("room", "test.not-a-connection")  # nobody refreshes this one
        await wait_until(lambda: connection.groups == {"room"}, what="the notice")
        joined = time.monotonic()
        # Several group_expiry periods pass; the connection is refreshed, the other is not.
        await wait_until(
            lambda: time.monotonic() - joined > 3 * layer.group_expiry and gateway.stats.memberships_refreshed >= 3,
            what="three group_expiry periods",
        )
        assert await members(layer, "room") == [connection.channel]
    finally:
        await gateway.stop()
        await layer.close()
