"""Consumers of durable channels: telling a redelivery, and handling each event once.

A durable channel delivers *at least once* (specs/layer.md, Durable channels): a worker
killed after the handler's work but before its acknowledgement, a handler slower than the
visibility timeout or a source that retried (an SMTP client after a 451) gives a handler
the same event again. Each delivery says so::

    delivery = delivery_of(message)     # None for at-most-once messages
    delivery.event_id, delivery.count, delivery.redelivered

and :func:`idempotent` makes a handler skip events it already finished::

    class Thumbnails(SyncConsumer):
        @idempotent
        def thumbnail_make(self, message):
            Thumbnail.objects.create(...)          # in the same transaction as the record

        @idempotent(key=lambda message: message["message_id"])   # the source's own id
        def email_received(self, message): ...

With ``store="db"`` (the default) the record is a row of ``switchboard.HandledEvent``
(``manage.py migrate`` creates the table). For a *sync* handler the row is written in one
transaction with everything the handler writes to that database: either both commit or
neither, so the handler's database work happens exactly once, even when two workers get
the event at the same time (the second waits on the unique row, then skips). An *async*
handler cannot run inside a sync transaction: its record is written after it returns, so
a worker killed in between lets the event run again.

``store="cache"`` records in a Django cache instead (``cache.add`` after the handler
returned): no table, no transaction, for handlers whose work is not in the database.

Records are kept until pruned: ``HandledEvent.objects.prune(timedelta(days=7))`` (or the
cache's ``timeout``); keep them longer than an event can be redelivered.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar, overload

from switchboard.gateway.layers.durable import Delivery, DurableMessage, delivery_of

from .db import database_sync_to_async

__all__ = ["Delivery", "DurableMessage", "delivery_of", "event_key", "idempotent"]

logger = logging.getLogger("switchboard.consumers.durable")

Handler = TypeVar("Handler", bound=Callable[..., Any])
KeyFunction = Callable[[dict[str, Any]], Any]

#: The default cache timeout of ``store="cache"`` records: a week.
DEFAULT_CACHE_TIMEOUT = 7 * 24 * 3600


def event_key(message: dict[str, Any]) -> str | None:
    """The default idempotency key: the event id of a durable delivery (None otherwise)."""
    delivery = delivery_of(message)
    return None if delivery is None else delivery.event_id


def _record_key(handler: Callable[..., Any], key: str) -> tuple[str, str]:
    """(digest, label) of one handler's record for one key."""
    scope = f"{handler.__module__}.{handler.__qualname__}"
    digest = hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()
    return digest, f"{scope} {key}"[:255]


@overload
def idempotent(handler: Handler, /) -> Handler: ...


@overload
def idempotent(
    *, key: KeyFunction | None = None, store: str = "db", using: str = "default", timeout: int = DEFAULT_CACHE_TIMEOUT
) -> Callable[[Handler], Handler]: ...


def idempotent(
    handler: Any = None,
    /,
    *,
    key: KeyFunction | None = None,
    store: str = "db",
    using: str = "default",
    timeout: int = DEFAULT_CACHE_TIMEOUT,
) -> Any:
    """Run a consumer handler at most once per event key (see the module docstring).

    ``key(message)`` gives the key (default :func:`event_key`: the delivery's event id); a
    message without one (``None``: an at-most-once message) is handled as usual.
    ``store``: ``"db"`` (``using`` names the database) or ``"cache"`` (``using`` names the
    cache, records expire after ``timeout`` seconds).
    """
    if store not in ("db", "cache"):
        raise ValueError(f"idempotent(store=...) must be 'db' or 'cache', not {store!r}")
    key_of = key or event_key

    def decorate(function: Handler) -> Handler:
        is_async = inspect.iscoroutinefunction(function)

        def key_for(message: dict[str, Any]) -> tuple[str, str] | None:
            value = key_of(message)
            return None if value is None else _record_key(function, str(value))

        if store == "db" and not is_async:

            @functools.wraps(function)
            def in_transaction(self: Any, message: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
                record = key_for(message)
                if record is None:
                    return function(self, message, *args, **kwargs)
                from django.db import transaction

                from switchboard.models import HandledEvent

                with transaction.atomic(using=using):
                    _row, created = HandledEvent.objects.using(using).get_or_create(key=record[0], defaults={"label": record[1]})
                    if not created:
                        logger.info("skipping %s: already handled", record[1])
                        return None
                    return function(self, message, *args, **kwargs)

            return in_transaction  # type: ignore[return-value]

        seen, record_done = _db_store(using) if store == "db" else _cache_store(using, timeout)
        if not is_async:

            @functools.wraps(function)
            def run_sync(self: Any, message: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
                record = key_for(message)
                if record is None:
                    return function(self, message, *args, **kwargs)
                if seen(record[0]):
                    logger.info("skipping %s: already handled", record[1])
                    return None
                result = function(self, message, *args, **kwargs)
                record_done(*record)
                return result

            return run_sync  # type: ignore[return-value]

        seen_async = database_sync_to_async(seen)
        record_done_async = database_sync_to_async(record_done)

        @functools.wraps(function)
        async def run_async(self: Any, message: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            record = key_for(message)
            if record is None:
                return await function(self, message, *args, **kwargs)
            if await seen_async(record[0]):
                logger.info("skipping %s: already handled", record[1])
                return None
            result = await function(self, message, *args, **kwargs)
            await record_done_async(*record)
            return result

        return run_async  # type: ignore[return-value]

    return decorate if handler is None else decorate(handler)


def _db_store(using: str) -> tuple[Callable[[str], bool], Callable[[str, str], None]]:
    # Models are imported at call time: handlers are decorated when their module is
    # imported, which may be before Django's app registry is ready.

    def seen(digest: str) -> bool:
        from switchboard.models import HandledEvent

        return HandledEvent.objects.using(using).filter(key=digest).exists()

    def record_done(digest: str, label: str) -> None:
        from switchboard.models import HandledEvent

        HandledEvent.objects.using(using).get_or_create(key=digest, defaults={"label": label})

    return seen, record_done


def _cache_store(using: str, timeout: int) -> tuple[Callable[[str], bool], Callable[[str, str], None]]:
    from django.core.cache import caches

    def seen(digest: str) -> bool:
        return caches[using].get(f"switchboard:handled:{digest}") is not None

    def record_done(digest: str, label: str) -> None:
        caches[using].set(f"switchboard:handled:{digest}", label, timeout)

    return seen, record_done
