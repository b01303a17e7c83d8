"""Worker affinity: sticky connections stay on one worker, move cleanly when it stops.

Two in-process workers share one in-memory layer; each tags its replies with its name,
so the tests see which worker handled what.
"""

from __future__ import annotations

import asyncio
from typing import Any

from switchboard.gateway.layers import ChannelLayer
from switchboard.gateway.server import Gateway
from switchboard.gateway.worker import Worker

from .test_gateway_worker import Delivered


def tagged_app(name: str, log: list[tuple[str, str]]) -> Any:
    """A WebSocket app that records (worker name, event) and echoes with its name."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            event = await receive()
            log.append((name, event["type"] + (":resumed" if scope.get("resumed") else "")))
            if event["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            elif event["type"] == "websocket.receive":
                await send({"type": "websocket.send", "text": f"{name}:{event['text']}"})
            elif event["type"] == "websocket.disconnect":
                return

    return app


class Pool:
    """Named workers running as tasks, each stoppable on its own."""

    def __init__(self, layer: ChannelLayer, log: list[tuple[str, str]]) -> None:
        self.layer = layer
        self.log = log
        self.stops: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str) -> None:
        stop = asyncio.Event()
        worker = Worker(tagged_app(name, self.log), self.layer, protocols=["websocket"], channels=[], heartbeat_interval=0.05)
        self.stops[name] = stop
        self.tasks[name] = asyncio.get_running_loop().create_task(worker.run(stop, drain_timeout=2))

    async def stop(self, name: str) -> None:
        self.stops[name].set()
        await self.tasks.pop(name)

    async def kill(self, name: str) -> None:
        """Stop without any goodbye: no release, no more heartbeats."""
        task = self.tasks.pop(name)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        for name in list(self.tasks):
            await self.stop(name)


async def texts(sink: Delivered, count: int) -> list[str]:
    return [m["text"] for m in (await sink.wait_for(count)) if m["type"] == "websocket.send"]


async def served_by_a(gateway: Gateway) -> tuple[Any, Delivered]:
    """A sticky WebSocket connection whose first message worker ``a`` answered."""
    sink = Delivered()
    connection = gateway.open_connection({"type": "websocket", "path": "/"}, sink, sticky=True)
    await gateway.send_event(connection, {"type": "websocket.connect"})
    await gateway.send_event(connection, {"type": "websocket.receive", "text": "one"})
    assert await texts(sink, 2) == ["a:one"]
    return connection, sink


async def test_sticky_connection_stays_on_the_worker_that_claimed_it(layer: ChannelLayer) -> None:
    log: list[tuple[str, str]] = []
    pool = Pool(layer, log)
    pool.start("a")
    pool.start("b")
    gateway = Gateway(layer)
    await gateway.start()
    sink = Delivered()
    connection = gateway.open_connection({"type": "websocket", "path": "/"}, sink, sticky=True)
    await gateway.send_event(connection, {"type": "websocket.connect"})
    await sink.wait_for(1)  # the accept; the claim travelled before it
    assert connection.worker is not None
    for n in range(100):
        await gateway.send_event(connection, {"type": "websocket.receive", "text": str(n)})
    replies = await texts(sink, 101)
    owner = replies[0].split(":")[0]
    assert replies == [f"{owner}:{n}" for n in range(100)]  # one worker, in order
    await pool.close()
    await gateway.stop()


async def test_graceful_stop_hands_connection_to_another_worker(layer: ChannelLayer) -> None:
    log: list[tuple[str, str]] = []
    pool = Pool(layer, log)
    pool.start("a")
    gateway = Gateway(layer)
    await gateway.start()
    connection, sink = await served_by_a(gateway)
    await pool.stop("a")  # a deploy: the old worker goes away...
    assert connection.worker is None
    await gateway.send_event(connection, {"type": "websocket.receive", "text": "two"})  # ...while a client sends
    await asyncio.sleep(0.1)
    pool.start("b")  # ...and the new one picks the message up from the layer
    assert await texts(sink, 3) == ["a:one", "b:two"]
    # The new worker replayed connect (resumed) and swallowed its accept.
    assert ("b", "websocket.connect:resumed") in log
    assert [m["type"] for m in sink.messages].count("websocket.accept") == 1
    await pool.close()
    await gateway.stop()


async def test_killed_worker_is_detected_and_its_connections_released(layer: ChannelLayer) -> None:
    log: list[tuple[str, str]] = []
    pool = Pool(layer, log)
    pool.start("a")
    gateway = Gateway(layer, worker_timeout=0.3)
    await gateway.start()
    connection, sink = await served_by_a(gateway)
    await pool.kill("a")
    async with asyncio.timeout(5):
        while connection.worker is not None:
            await asyncio.sleep(0.02)
    assert gateway.stats.workers_lost == 1
    pool.start("b")
    await gateway.send_event(connection, {"type": "websocket.receive", "text": "two"})
    assert (await texts(sink, 3))[-1] == "b:two"
    await pool.close()
    await gateway.stop()


async def test_claims_are_not_made_for_non_sticky_connections(layer: ChannelLayer) -> None:
    log: list[tuple[str, str]] = []
    pool = Pool(layer, log)
    pool.start("a")
    gateway = Gateway(layer)
    await gateway.start()
    sink = Delivered()
    connection = gateway.open_connection({"type": "websocket", "path": "/"}, sink)
    await gateway.send_event(connection, {"type": "websocket.connect"})
    await sink.wait_for(1)
    assert connection.worker is None and gateway.stats.claims == 0
    await pool.close()
    await gateway.stop()


async def test_events_sent_before_the_claim_arrives_wait_for_it(layer: ChannelLayer) -> None:
    """No event can overtake the claim and reach a worker that won't hold the instance."""
    log: list[tuple[str, str]] = []
    pool = Pool(layer, log)
    pool.start("a")
    pool.start("b")
    gateway = Gateway(layer)
    await gateway.start()
    sink = Delivered()
    connection = gateway.open_connection({"type": "websocket", "path": "/"}, sink, sticky=True)
    await gateway.send_event(connection, {"type": "websocket.connect"})
    for n in range(50):  # without waiting for the accept (and so for the claim)
        await gateway.send_event(connection, {"type": "websocket.receive", "text": str(n)})
    assert gateway.stats.events_held > 0
    replies = await texts(sink, 51)
    owner = replies[0].split(":")[0]
    assert replies == [f"{owner}:{n}" for n in range(50)]
    assert {name for name, _ in log} == {owner}
    await pool.close()
    await gateway.stop()


async def test_held_events_go_to_the_pool_when_no_worker_claims_in_time(layer: ChannelLayer) -> None:
    log: list[tuple[str, str]] = []
    gateway = Gateway(layer, claim_timeout=0.2)
    await gateway.start()
    sink = Delivered()
    connection = gateway.open_connection({"type": "websocket", "path": "/"}, sink, sticky=True)
    await gateway.send_event(connection, {"type": "websocket.connect"})
    await gateway.send_event(connection, {"type": "websocket.receive", "text": "x"})
    # The worker that took the connect died before claiming: drop that first event.
    assert (await layer.receive("switchboard.websocket"))["event"]["type"] == "websocket.connect"
    pool = Pool(layer, log)
    pool.start("b")
    assert await texts(sink, 1) == ["b:x"]  # resumed by b (accept swallowed) once the hold timed out
    await pool.close()
    await gateway.stop()


def slow_app(name: str, delay: float) -> Any:
    """Echoes with its name after ``delay``: a handler still busy when a deploy starts."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            event = await receive()
            if event["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            elif event["type"] == "websocket.receive":
                await asyncio.sleep(delay)
                await send({"type": "websocket.send", "text": f"{name}:{event['text']}"})
            elif event["type"] == "websocket.disconnect":
                return

    return app


async def test_order_holds_across_a_deploy(layer: ChannelLayer) -> None:
    """The new worker starts on a connection only after the old one finished its events."""
    gateway = Gateway(layer)
    await gateway.start()
    stops = {name: asyncio.Event() for name in "ab"}
    workers = {
        name: Worker(slow_app(name, 0.004), layer, protocols=["websocket"], channels=[], heartbeat_interval=0.05)
        for name in "ab"
    }
    loop = asyncio.get_running_loop()
    tasks = {"a": loop.create_task(workers["a"].run(stops["a"], drain_timeout=5))}
    try:
        sink = Delivered()
        connection = gateway.open_connection({"type": "websocket", "path": "/"}, sink, sticky=True)
        await gateway.send_event(connection, {"type": "websocket.connect"})
        await sink.wait_for(1)
        tasks["b"] = loop.create_task(workers["b"].run(stops["b"], drain_timeout=5))
        for n in range(300):
            await gateway.send_event(connection, {"type": "websocket.receive", "text": str(n)})
            await asyncio.sleep(0.001)  # a client typing faster than the handler keeps up
            if n == 100:
                stops["a"].set()  # deploy while a still has a backlog
        replies = await texts(sink, 301)
        assert [int(text.split(":")[1]) for text in replies] == list(range(300))
        owners = [text.split(":")[0] for text in replies]
        assert owners[0] == "a" and owners[-1] == "b"
        assert owners == sorted(owners)  # all of a's events before any of b's: no overlap
        assert gateway.stats.events_held > 0  # b's first events waited for a to drain
    finally:
        for stop in stops.values():
            stop.set()
        await asyncio.gather(*tasks.values())
        await gateway.stop()


async def test_consumer_can_ask_for_ordering_on_a_connectionless_socket(layer: ChannelLayer) -> None:
    """A non-sticky connection (a UDP socket, say) spreads; ``switchboard.claim`` pins it."""

    def app(name: str) -> Any:
        async def handle(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await send({"type": "switchboard.claim"})
            while True:
                event = await receive()
                await send({"type": "udp.send", "data": name.encode(), "n": event["n"]})

        return handle

    gateway = Gateway(layer)
    await gateway.start()
    sink = Delivered()
    connection = gateway.open_connection({"type": "udp"}, sink)
    stops = [asyncio.Event(), asyncio.Event()]
    tasks = [
        asyncio.get_running_loop().create_task(Worker(app(name), layer, protocols=["udp"], channels=[]).run(stop))
        for name, stop in zip("ab", stops)
    ]
    await gateway.send_event(connection, {"type": "udp.datagram", "n": 0})
    await sink.wait_for(1)
    for n in range(1, 200):
        await gateway.send_event(connection, {"type": "udp.datagram", "n": n})
    replies = await sink.wait_for(200)
    assert [m["n"] for m in replies] == list(range(200))
    assert len({m["data"] for m in replies}) == 1  # one worker handled them all
    for stop in stops:
        stop.set()
    await asyncio.gather(*tasks)
    await gateway.stop()


async def test_scope_less_event_after_the_instance_ended_resumes_it(layer: ChannelLayer) -> None:
    """Events to a claiming worker carry no scope; one that outlived its instance asks for it."""
    log: list[tuple[str, str]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            event = await receive()
            log.append(("a", event["type"] + (":resumed" if scope.get("resumed") else "")))
            if event["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            elif event["type"] == "websocket.receive":
                await send({"type": "websocket.send", "text": f"{scope['path']}:{event['text']}"})
                if event["text"] == "end":
                    return  # the instance ends; the connection stays open and claimed

    sent: list[dict[str, Any]] = []
    original_send = layer.send

    async def recording_send(channel: str, message: dict[str, Any], **options: Any) -> None:
        sent.append(message)
        await original_send(channel, message, **options)

    original_send_tracked = layer.send_tracked

    async def recording_send_tracked(channel: str, message: dict[str, Any], **options: Any) -> bytes:
        sent.append(message)
        return await original_send_tracked(channel, message, **options)

    layer.send = recording_send  # type: ignore[method-assign]
    layer.send_tracked = recording_send_tracked  # type: ignore[method-assign]
    worker = Worker(app, layer, protocols=["websocket"], channels=[], heartbeat_interval=0.05)
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(worker.run(stop, drain_timeout=1))
    gateway = Gateway(layer)
    await gateway.start()
    sink = Delivered()
    connection = gateway.open_connection({"type": "websocket", "path": "/p"}, sink, sticky=True)
    await gateway.send_event(connection, {"type": "websocket.connect"})
    await sink.wait_for(1)
    assert connection.worker == worker.channel
    await gateway.send_event(connection, {"type": "websocket.receive", "text": "end"})
    await texts(sink, 2)
    for text in ("x", "y"):
        await gateway.send_event(connection, {"type": "websocket.receive", "text": text})
    assert await texts(sink, 4) == ["/p:end", "/p:x", "/p:y"]
    envelopes = [m for m in sent if m["type"] == "switchboard.event"]
    assert "scope" in envelopes[0] and all("scope" not in m for m in envelopes[1:])
    assert ("a", "websocket.connect:resumed") in log
    assert worker.stats.scope_requests == 1 and gateway.stats.scopes_resent == 1
    # A scope request for a connection that closed meanwhile is answered without a scope.
    gateway.close_connection(connection)
    late = {"type": "switchboard.event", "connection": connection.channel, "event": {"type": "websocket.receive", "text": "z"}}
    worker._hold_unscoped(connection.channel, late)
    async with asyncio.timeout(5):
        while worker._unscoped:
            await asyncio.sleep(0.01)
    assert worker.stats.events_unscoped_dropped == 1
    stop.set()
    await task
    await gateway.stop()


async def test_a_worker_stopping_with_its_gateway_is_told_the_gateway_is_gone(layer: ChannelLayer) -> None:
    """Gateway and worker stopped together (a whole deployment going down): the worker's
    request to be released reaches a gateway whose reply loop has ended, so the gateway,
    as it stops, tells the workers that held its claims. Without that the worker waited
    out its whole drain timeout (60 s here) for an answer."""
    from support.waiting import deadline

    log: list[tuple[str, str]] = []
    stop_worker = asyncio.Event()
    worker = Worker(tagged_app("a", log), layer, protocols=["websocket"], channels=[], heartbeat_interval=0.05)
    worker_task = asyncio.get_running_loop().create_task(worker.run(stop_worker, drain_timeout=60))
    gateway = Gateway(layer)
    await gateway.start()
    sink = Delivered()
    connection = gateway.open_connection({"type": "websocket", "path": "/"}, sink, sticky=True)
    await gateway.send_event(connection, {"type": "websocket.connect"})
    await sink.wait_for(1)
    assert connection.worker is not None  # claimed: the worker holds a claim on this gateway

    gateway.begin_stop()
    gateway.close_connection(connection)  # as the plugin does; the worker has not seen a disconnect
    await gateway.stop()
    stop_worker.set()
    await asyncio.wait_for(worker_task, deadline(20))


async def test_a_live_worker_taken_for_dead_ends_its_instances_when_told(layer: ChannelLayer) -> None:
    """A worker that missed its heartbeats but runs (starved of CPU, cut off from its
    gateway's Redis primary) is told which connections went to the pool (W7): it ends
    their instances, silently, so it no longer handles those clients beside the worker
    that resumes them (a group message it sends would reach them twice)."""
    from support.waiting import deadline, eventually

    log: list[tuple[str, str]] = []
    stop_a = asyncio.Event()
    # Heartbeats far apart: the gateway (worker_timeout 2 s) takes this live worker for dead.
    a = Worker(tagged_app("a", log), layer, protocols=["websocket"], channels=[], heartbeat_interval=600)
    task_a = asyncio.get_running_loop().create_task(a.run(stop_a, drain_timeout=2))
    gateway = Gateway(layer, worker_timeout=2.0)
    await gateway.start()
    connection, sink = await served_by_a(gateway)

    def ended() -> bool:
        return a.stats.instances_taken_back >= 1 and connection.channel not in a.instances

    await eventually(ended, "the worker to end the instance it was told about")
    # At least once: on a slow machine it may be judged lost before its first message
    # too, claim again from the pool at that epoch (kept), and be judged lost again.
    assert gateway.stats.workers_lost >= 1
    assert a.affinity.claims == {}
    assert ("a", "websocket.disconnect") not in log  # silently: the client is still connected
    stop_a.set()
    await asyncio.wait_for(task_a, deadline(20))

    # The connection's next event resumes it on another worker.
    pool = Pool(layer, log)
    pool.start("b")
    await gateway.send_event(connection, {"type": "websocket.receive", "text": "two"})
    assert (await texts(sink, 3))[-1] == "b:two"
    assert ("b", "websocket.connect:resumed") in log
    await pool.close()
    await gateway.stop()


async def test_an_instance_that_claimed_again_is_kept_when_told_late(layer: ChannelLayer) -> None:
    """W7 by epoch: the gateway's notice can reach a worker after the connection's next
    claim-asking envelope came back to that same worker from the pool. Its instance
    claimed again at the notice's epoch and stays; one told of a later epoch ends."""
    from support.waiting import deadline, eventually

    from switchboard.gateway.envelope import CLAIM, RELEASED, control_channel_of, wrap

    log: list[tuple[str, str]] = []
    stop = asyncio.Event()
    worker = Worker(tagged_app("a", log), layer, protocols=["websocket"], channels=[], heartbeat_interval=0.05)
    task = asyncio.get_running_loop().create_task(worker.run(stop, drain_timeout=2))
    # This test is the gateway: a connection's reply channel, envelopes sent by hand.
    reply = await layer.new_channel("gateway.test")
    scope = {"type": "websocket", "path": "/", "reply_channel": reply}
    asking = wrap(reply, scope, {"type": "websocket.connect"})
    asking.update(claim=True, epoch=1)  # taken back once from another worker judged lost
    await layer.send("switchboard.websocket", asking)
    assert (await asyncio.wait_for(layer.receive(reply), deadline(10)))["type"] == CLAIM
    assert (await asyncio.wait_for(layer.receive(reply), deadline(10)))["type"] == "websocket.accept"

    async def told(epoch: int) -> None:
        notice = {"type": RELEASED, "gateway": control_channel_of(reply), "connections": {reply: epoch}}
        await layer.send(worker.channel, notice)

    await told(1)  # the notice of the release it has already claimed again after
    await layer.send(worker.channel, wrap(reply, None, {"type": "websocket.receive", "text": "two"}))
    assert (await asyncio.wait_for(layer.receive(reply), deadline(10))) == {"type": "websocket.send", "text": "a:two"}
    assert worker.stats.instances_taken_back == 0

    await told(2)
    await eventually(lambda: worker.stats.instances_taken_back == 1, "the instance to end")
    assert reply not in worker.instances and worker.affinity.claims == {}
    assert ("a", "websocket.disconnect") not in log
    stop.set()
    await asyncio.wait_for(task, deadline(20))
