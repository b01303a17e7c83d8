"""Reading several message sources at once and handling their messages one at a time.

A consumer without a gateway reply channel reads two sources: the ASGI ``receive`` and
its own layer channel. Messages are handled strictly one after another (a consumer's
handlers never run concurrently with each other), while the next read of each source is
already waiting, so neither source can starve the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from .asgi import Message

Source = Callable[[], Awaitable[Message]]
Handler = Callable[[Message], Awaitable[None]]


async def _read(source: Source) -> Message:
    return await source()


async def dispatch_from(sources: Sequence[Source], handle: Handler) -> None:
    """Feed every message of every source to ``handle`` until a read or ``handle`` raises.

    Pending reads are cancelled on the way out; a message already read but not yet handled
    when another handler stops the consumer is dropped, which is what stopping means.
    """
    if len(sources) == 1:
        (source,) = sources
        while True:
            await handle(await source())
    loop = asyncio.get_running_loop()
    pending: dict[asyncio.Task[Message], int] = {loop.create_task(_read(source)): index for index, source in enumerate(sources)}
    try:
        while True:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            # Source order breaks ties so ``receive`` (index 0) goes first when both are ready.
            for task in sorted(done, key=pending.__getitem__):
                index = pending.pop(task)
                message = task.result()
                await handle(message)
                pending[loop.create_task(_read(sources[index]))] = index
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
