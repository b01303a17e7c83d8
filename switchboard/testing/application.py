"""``ApplicationCommunicator``: drive one ASGI application instance from a test.

asgiref's communicator (send events in, read messages out, with timeouts), plus the one
thing a Django test needs from it: the application runs with database connections left
alone. ``database_sync_to_async`` normally closes stale connections around every call, as
Django does between requests; inside a Django ``TestCase`` the test's connection holds the
test's transaction, and closing it would fail the next query with "connection already
closed". Applications started by a communicator skip that cleanup (``keep_connections``).
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from asgiref.testing import ApplicationCommunicator as _AsgirefCommunicator

from switchboard.consumers.db import keep_connections


class ApplicationCommunicator(_AsgirefCommunicator):
    """Runs ``application(scope, receive, send)`` and lets a test talk to it.

    ``send_input(message)``, ``receive_output(timeout=1)``, ``receive_nothing(timeout=0.1)``,
    ``wait(timeout=1)`` and ``stop()`` are asgiref's. An exception the application raised
    is raised by the next call.
    """

    @property
    def future(self) -> asyncio.Task[Any]:
        if self._future is None:
            # A fresh context, as asgiref's (nothing the test set leaks into the app),
            # with the database cleanup switched off for the app and its thread hops.
            context = contextvars.Context()
            context.run(keep_connections.set, True)
            self._future = context.run(
                asyncio.create_task, self.application(self.scope, self.input_queue.get, self.output_queue.put)
            )
            self._started(self._future)
        return self._future

    def _started(self, task: asyncio.Task[Any]) -> None:
        """Hook for subclasses that run something beside the application."""

    async def receive_output(self, timeout: float = 1) -> Any:
        """The application's next message; its exception as soon as it dies instead.

        asgiref's version waits out the whole timeout before reporting that the
        application has crashed; a test here fails at once, with the crash. When the
        timeout passes with the application still running, it is cancelled and
        ``TimeoutError`` raised, as in asgiref (and Channels).
        """
        if self.future.done():
            self.future.result()
        getter = asyncio.ensure_future(self.output_queue.get())
        try:
            await asyncio.wait({getter, self.future}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
                await asyncio.gather(getter, return_exceptions=True)
        if getter.done() and not getter.cancelled():
            return getter.result()
        if self.future.done():
            self.future.result()  # raises what the application raised
            raise TimeoutError("the application finished without sending another message")
        self.future.cancel()
        await asyncio.gather(self.future, return_exceptions=True)
        raise TimeoutError(f"no message from the application within {timeout}s")
