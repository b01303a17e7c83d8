"""Django's HTTP views on a worker at what WSGI costs: one hand-off to a reused thread.

Django's own ASGI handler runs every request of a sync view in a fresh
``ThreadSensitiveContext``: a new thread pool, a thread started and joined, and a
separate hop to it for the ``request_started`` receivers, the view and middleware, and
``response.close()``. On a worker that was most of the cost of a plain Django view
(docs/benchmarks.md). :class:`DjangoHttpApplication` wraps Django's
:class:`~django.core.handlers.asgi.ASGIHandler` and serves a request of a sync view the way
``WSGIHandler`` serves it, in one bounded, reused thread pool:

* on the event loop: read the body from the ``http.request`` events (as many as the
  gateway sends, ``more_body`` included) with Django's own ``read_body``;
* in a pool thread (:mod:`.thread_pool`: up to ``django_threads``, as many running as the
  GIL can use), in one hand-off: ``set_script_prefix``, ``request_started``, build the
  :class:`~django.core.handlers.asgi.ASGIRequest`, run ``get_response`` through the
  *sync* middleware chain (loaded as ``WSGIHandler`` loads it), encode the response;
* back on the loop: send ``http.response.start`` and the body as ASGI messages;
* in the same pool thread, after handing the response over: ``response.close()``, which
  sends ``request_finished`` (so ``close_old_connections`` closes or keeps the thread's
  database connections per ``CONN_MAX_AGE``, as under WSGI, where each thread keeps its
  own connection between requests).

A streaming response (``StreamingHttpResponse``, ``FileResponse``) is iterated in that
same thread, each part sent as an ``http.response.body`` with ``more_body`` and waited for
(backpressure), until the client goes away (``http.disconnect``) or the content ends.

Requests whose view is a coroutine function, or whose middleware chain has a
middleware that cannot run synchronously, keep Django's own async path (the wrapped
``ASGIHandler``, unchanged): that is how Django itself decides what runs where
(``BaseHandler.load_middleware`` and ``_get_response``). ``WORKER["django_http"]``
forces either path (docs/http.md, *Django views*).

The pool threads are told the worker's event loop as ``sync_to_async`` threads are, so
``async_to_sync`` inside a view (``async_to_sync(channel_layer.group_send)``) runs its
coroutine on the worker's loop, where the channel layer lives.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import io
import logging
import os
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator
from tempfile import SpooledTemporaryFile
from typing import IO, Any, Literal, cast

from asgiref.sync import SyncToAsync, iscoroutinefunction
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import FileResponse, HttpResponseBase
from django.urls import Resolver404, get_resolver, set_script_prefix
from django.utils.module_loading import import_string

from .asgi import Message, Receive, Scope, Send
from .thread_pool import AdaptiveThreadPool

logger = logging.getLogger("switchboard.django_http")

Mode = Literal["auto", "sync", "async"]
MODES: tuple[Mode, ...] = ("auto", "sync", "async")
DEFAULT_THREADS = 8
_SYNC_VIEWS_KEPT = 1024  # paths whose view's sync-ness is remembered


class _Runtime:
    """The process's Django HTTP settings and its thread pool (one per worker process).

    A module-level object because routers wrap Django's handler when the routing module
    is imported, before any worker exists; the worker then sets the mode and the pool
    size from ``WORKER`` options (:func:`configure`).
    """

    def __init__(self) -> None:
        self.mode: Mode = "auto"
        self.threads = DEFAULT_THREADS
        self._pool: AdaptiveThreadPool | None = None
        self._lock = threading.Lock()

    def pool(self) -> AdaptiveThreadPool:
        pool = self._pool
        if pool is None:
            with self._lock:
                pool = self._pool
                if pool is None:
                    pool = self._pool = AdaptiveThreadPool(self.threads, name="switchboard-django")
        return pool

    def figures(self) -> dict[str, int] | None:
        """The pool's threads running, its size and the requests waiting; None before its first request."""
        pool = self._pool
        if pool is None:
            return None
        return {"running": pool.active, "threads": pool.max_threads, "waiting": pool.waiting}

    def configure(self, mode: str, threads: int) -> None:
        if mode not in MODES:
            raise ValueError(f"django_http must be one of {', '.join(MODES)}, got {mode!r}")
        if threads < 1:
            raise ValueError(f"django_threads must be >= 1, got {threads!r}")
        self.mode = cast(Mode, mode)
        with self._lock:
            if threads != self.threads and self._pool is not None:
                # Requests already in the old pool finish there; new ones go to the new one.
                self._pool.shutdown(wait=False)
                self._pool = None
            self.threads = threads


RUNTIME = _Runtime()


def configure(mode: str = "auto", threads: int = DEFAULT_THREADS) -> None:
    """Set how this process serves Django HTTP requests (the worker calls it from its options)."""
    RUNTIME.configure(mode, threads)


_WRAPPED: weakref.WeakKeyDictionary[ASGIHandler, DjangoHttpApplication] = weakref.WeakKeyDictionary()


def fast_django(app: Any) -> Any:
    """``app``, or a :class:`DjangoHttpApplication` around it when it is Django's own ASGI handler.

    Only an instance of exactly :class:`ASGIHandler` (what ``get_asgi_application()``
    returns) is wrapped: a subclass may change how requests are handled, so it keeps
    Django's path. The same handler is wrapped once however many routes name it.
    """
    if type(app) is not ASGIHandler:
        return app
    wrapped = _WRAPPED.get(app)
    if wrapped is None:
        wrapped = _WRAPPED[app] = DjangoHttpApplication(app)
    return wrapped


class SyncHandler(ASGIHandler):
    """Django's ASGI request handling with the middleware chain loaded for sync calls.

    An ``ASGIHandler`` for what it shares with the async path (``read_body``,
    ``create_request``, ``handle_uncaught_exception``, ``chunk_bytes``), with
    ``load_middleware(is_async=False)`` as ``WSGIHandler`` does, so ``get_response`` runs
    the whole chain and the view in the calling thread, adapting only async-only
    middleware and async views (``async_to_sync``), as under WSGI.
    """

    def __init__(self) -> None:
        base.BaseHandler.__init__(self)
        self.load_middleware(is_async=False)

    async def read_body(self, receive: Receive) -> IO[bytes]:
        """Django's ``read_body``, with a body that came whole in one event kept as it came.

        Nearly every request's body is one ``http.request`` (the gateway sends a body
        that is complete within ``body_chunk_size`` so), already in memory in the event:
        a ``BytesIO`` over it spares a ``SpooledTemporaryFile`` per request. A body in
        several events is spooled as Django spools it (to disk past
        ``FILE_UPLOAD_MAX_MEMORY_SIZE``); a disconnect first raises ``RequestAborted``.
        """
        spool: SpooledTemporaryFile[bytes] | None = None
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if spool is not None:
                    spool.close()
                raise RequestAborted()
            more = message.get("more_body", False)
            if spool is None:
                if not more:
                    return io.BytesIO(message.get("body", b""))
                spool = SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b")
            if "body" in message:
                spool.write(message["body"])
            if not more:
                spool.seek(0)
                return spool


def _async_only_middleware() -> list[str]:
    """Middleware in ``settings.MIDDLEWARE`` that cannot run in a sync chain."""
    return [path for path in settings.MIDDLEWARE if not getattr(import_string(path), "sync_capable", True)]


def response_start(response: HttpResponseBase) -> Message:
    """``http.response.start`` for ``response``, its headers encoded as Django's ASGI handler encodes them."""
    headers = []
    for header, value in response.items():
        if isinstance(header, str):
            header = header.encode("ascii")
        if isinstance(value, str):
            value = value.encode("latin1")
        headers.append((bytes(header), bytes(value)))
    for cookie in response.cookies.values():
        headers.append((b"Set-Cookie", cookie.output(header="").encode("ascii").strip()))
    return {"type": "http.response.start", "status": response.status_code, "headers": headers}


class _Exchange:
    """One request's hand-over between its pool thread and its instance on the event loop.

    The thread calls :meth:`respond` (a whole response) or :meth:`send_now` (each part of a
    streaming one) and :meth:`fail`; the loop awaits :attr:`outcome`. A streaming
    response starts a listener for ``http.disconnect``, after which :meth:`send_now`
    tells the thread to stop.
    """

    __slots__ = ("aborted", "listener", "loop", "outcome", "receive", "send")

    def __init__(self, loop: asyncio.AbstractEventLoop, receive: Receive, send: Send) -> None:
        self.loop = loop
        self.receive = receive
        self.send = send
        self.outcome: asyncio.Future[list[Message]] = loop.create_future()
        self.aborted = False
        self.listener: asyncio.Task[None] | None = None

    # -- thread side --------------------------------------------------------------------

    def respond(self, messages: list[Message]) -> None:
        """Hand the loop the messages that remain to be sent; the request is done."""
        self.loop.call_soon_threadsafe(self._settle, messages, None)

    def fail(self, exc: BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self._settle, None, exc)
        except RuntimeError:  # the loop is closed: nobody is left to tell
            logger.warning("Django request failed after its worker loop closed: %r", exc)

    def send_now(self, message: Message) -> bool:
        """Send ``message`` from the thread and wait until it is sent; False once the client is gone."""
        if self.aborted:
            return False
        self.run(self._send_streamed(message))
        return not self.aborted

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coroutine`` on the loop and wait for its result (the thread blocks).

        Waits as long as the coroutine takes (a part of an async stream may come minutes
        apart), but not on a loop that has stopped: a stopping worker must not leave this
        thread waiting for ever (the interpreter joins pool threads at exit).
        """
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        while True:
            try:
                return future.result(timeout=1.0)
            except concurrent.futures.TimeoutError:
                if self.loop.is_closed() or not self.loop.is_running():
                    future.cancel()
                    raise RuntimeError("the worker's event loop stopped during the response") from None

    # -- loop side ----------------------------------------------------------------------

    def _settle(self, messages: list[Message] | None, exc: BaseException | None) -> None:
        if self.outcome.done():  # the instance was cancelled meanwhile
            return
        if exc is not None:
            self.outcome.set_exception(exc)
        else:
            self.outcome.set_result(messages or [])

    async def _send_streamed(self, message: Message) -> None:
        if self.listener is None:
            self.listener = self.loop.create_task(self._listen())
        if not self.aborted:
            await self.send(message)

    async def _listen(self) -> None:
        """Mark the exchange aborted when the client goes away (or the gateway gives up)."""
        while True:
            message = await self.receive()
            if message.get("type") == "http.disconnect":
                self.aborted = True
                return

    def close(self) -> None:
        self.aborted = True
        if self.listener is not None:
            self.listener.cancel()


class DjangoHttpApplication:
    """Django's ASGI handler with sync views served in one hop to a reused thread pool.

    ``django`` is the ``ASGIHandler`` it wraps: requests that keep the async path go to
    it unchanged. Signals and ``response._handler_class`` name ``type(django)`` on both
    paths, so receivers connected with ``sender=ASGIHandler`` see every request.
    """

    def __init__(self, django: ASGIHandler) -> None:
        self.django = django
        self.handler_class = type(django)
        self.sync = SyncHandler()
        self.async_only_middleware = _async_only_middleware()
        self.stats: dict[str, int] = {"sync": 0, "async": 0}
        # (ROOT_URLCONF, path_info) -> whether its view is sync: resolving was 4% of a
        # worker's busy time on a plain view. Bounded: cleared when it fills.
        self._sync_views: dict[tuple[str, str], bool] = {}

    def uses_sync_path(self, scope: Scope) -> bool:
        """Whether this request runs in the pool: Django's own rule for what is sync.

        The view is found with the ``ROOT_URLCONF`` resolver, as ``_get_response`` will
        find it; a request that resolves to nothing (a 404) is served synchronously. A
        middleware that changes ``request.urlconf`` may route to another view later: the
        sync chain still serves it correctly (an async view under ``async_to_sync``).
        """
        mode = RUNTIME.mode
        if mode != "auto":
            return mode == "sync"
        if self.async_only_middleware:
            return False
        script_name = get_script_prefix(scope)
        path = scope["path"]
        path_info = path.removeprefix(script_name) if script_name else path
        key = (settings.ROOT_URLCONF, path_info)
        known = self._sync_views.get(key)
        if known is not None:
            return known
        try:
            sync = not iscoroutinefunction(get_resolver().resolve(path_info).func)
        except Resolver404:
            sync = True
        if len(self._sync_views) >= _SYNC_VIEWS_KEPT:
            self._sync_views.clear()
        self._sync_views[key] = sync
        return sync

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.uses_sync_path(scope):
            self.stats["async"] += 1
            await self.django(scope, receive, send)
            return
        self.stats["sync"] += 1
        try:
            body_file = await self.sync.read_body(receive)
        except RequestAborted:
            return
        loop = asyncio.get_running_loop()
        exchange = _Exchange(loop, receive, send)
        context = contextvars.copy_context()
        try:
            RUNTIME.pool().run_soon(context.run, self._serve, scope, body_file, exchange)
        except BaseException:
            body_file.close()
            raise
        try:
            messages = await exchange.outcome
            if len(messages) == 1:
                await send(messages[0])
            elif messages:
                await _send_together(send, messages)
        finally:
            exchange.close()

    # -- in the pool thread -------------------------------------------------------------

    def _serve(self, scope: Scope, body_file: IO[bytes], exchange: _Exchange) -> None:
        """One request, start to ``response.close()``, in this pool thread."""
        # What sync_to_async tells its threads: async_to_sync here runs on the worker loop.
        SyncToAsync.threadlocal.main_event_loop = exchange.loop
        SyncToAsync.threadlocal.main_event_loop_pid = os.getpid()
        response: HttpResponseBase | None = None
        try:
            set_script_prefix(get_script_prefix(scope))
            signals.request_started.send(sender=self.handler_class, scope=scope)
            request, response = self.sync.create_request(scope, body_file)
            if request is not None:
                response = self.sync.get_response(request)
            assert response is not None
            response._handler_class = self.handler_class
            if not response.streaming:
                exchange.respond([response_start(response), *self._body_messages(response.content)])
            else:
                if isinstance(response, FileResponse):
                    response.block_size = self.sync.chunk_size  # the gateway frames; big reads are cheaper
                self._stream(response, exchange)
                exchange.respond([])
        except BaseException as exc:
            exchange.fail(exc)
        finally:
            body_file.close()
            if response is not None:
                try:
                    response.close()
                except Exception:
                    logger.exception("closing the response to %s %s raised", scope.get("method"), scope.get("path"))
            SyncToAsync.threadlocal.main_event_loop = None

    def _body_messages(self, content: bytes) -> list[Message]:
        return [
            {"type": "http.response.body", "body": chunk, "more_body": not last} for chunk, last in self.sync.chunk_bytes(content)
        ]

    def _stream(self, response: Any, exchange: _Exchange) -> None:
        """Send a streaming response part by part, from this thread, until it ends or the client goes.

        Sync content is iterated here, in the thread that ran the view (its database
        connection, as under WSGI); async content (an async iterator, which a sync view
        may return too) is advanced on the loop one part at a time, as Django's ASGI
        handler would, but still sent from here, so ``close()`` runs in this thread.
        """
        if not exchange.send_now(response_start(response)):
            return
        parts: Iterator[bytes] = _parts_on_loop(response.streaming_content, exchange) if response.is_async else iter(response)
        try:
            for part in parts:
                for chunk, _last in self.sync.chunk_bytes(part):
                    if not exchange.send_now({"type": "http.response.body", "body": chunk, "more_body": True}):
                        return
            exchange.send_now({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            close = getattr(parts, "close", None)
            if close is not None:
                close()


async def _send_together(send: Send, messages: list[Message]) -> None:
    """Send a whole response's messages in one go: start and body travel in one layer batch.

    Awaited one by one, each send would wait for its own round trip to the layer before
    the next is even queued (the layer's group commit), so a response cost two round
    trips and, unless other requests filled the batch, two pushes. So every message is
    queued first and the outcomes awaited after: a worker's ``send`` queues at the call
    (``queues_at_call``), with no task; any other ``send`` (a middleware's wrapper,
    another server's) is started as a task, and tasks start in order and queue their
    messages before they first wait. On split http-get at ~1,700 req/s the push scripts
    Redis ran per request went from 0.88 to 0.54. The first failure is raised once every
    queued message is settled, so none is left unretrieved.
    """
    queues_at_call = getattr(send, "queues_at_call", False)
    pending: list[Awaitable[None]] = []
    failure: BaseException | None = None
    for message in messages:
        try:
            sent = send(message)
        except BaseException as exc:  # refused at the call (a bad message): settle the queued ones
            failure = exc
            break
        pending.append(sent if queues_at_call else asyncio.ensure_future(sent))
    for outcome in pending:
        try:
            await outcome
        except BaseException as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


_END = object()


async def _next_part(iterator: AsyncIterator[bytes]) -> object:
    try:
        return await anext(iterator)
    except StopAsyncIteration:
        return _END


def _parts_on_loop(content: AsyncIterator[bytes], exchange: _Exchange) -> Iterator[bytes]:
    """The parts of async ``content``, each awaited on the loop; closed there if left early."""
    try:
        while True:
            part = exchange.run(_next_part(content))
            if part is _END:
                return
            yield part
    finally:
        aclose = getattr(content, "aclose", None)
        if aclose is not None and not exchange.loop.is_closed():
            try:
                exchange.run(aclose())
            except Exception:
                logger.exception("closing a streaming response's async iterator raised")
