"""Fixtures for the sessions, auth, origin and HTTP-streaming tests.

Django is configured here exactly as the other unit-test directories do it (no apps, an
in-memory SQLite database), so whichever directory's conftest runs first, the settings are
the same. The apps these tests need (auth, sessions) are switched on per test with
``override_settings``, and the database is Django's shared in-memory test database, which
the test thread and Django's sync thread (``database_sync_to_async``) both see.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from support.django_settings import configure as configure_django

configure_django()

from django.db import connection
from django.test.utils import override_settings
from support.asgi_app import AppRunner as AppRunner
from support.asgi_app import layer as layer
from support.asgi_app import run_app as run_app

PASSWORD = "correct horse battery staple"

AUTH_SETTINGS: dict[str, Any] = {
    "INSTALLED_APPS": ["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.sessions"],
    "AUTHENTICATION_BACKENDS": ["django.contrib.auth.backends.ModelBackend"],
    "SESSION_ENGINE": "django.contrib.sessions.backends.db",
    # Fast hashing: these tests check who is logged in, not how passwords are stored.
    "PASSWORD_HASHERS": ["django.contrib.auth.hashers.MD5PasswordHasher"],
    "ALLOWED_HOSTS": ["chat.example.com", ".example.org", "127.0.0.1", "[::1]"],
    "DEBUG": False,
}


def forget_connections() -> None:
    """Drop this thread's database connections; its next query opens one from the settings.

    Tests of other directories may have opened a private ``:memory:`` database in this
    thread already, and SQLite ignores ``close()`` on those, so they must really go.
    """
    from django.db import connections
    from django.db.backends.base.base import BaseDatabaseWrapper

    for conn in connections.all(initialized_only=True):
        BaseDatabaseWrapper.close(conn)
        del connections[conn.alias]


@pytest.fixture(scope="session")
def auth_database() -> Iterator[None]:
    """Django's shared in-memory test database, migrated for auth and sessions.

    Both threads that query it — this one and Django's sync thread, where
    ``database_sync_to_async`` runs — first drop connections opened before it existed.
    """
    forget_connections()
    asyncio.run(sync_to_async(forget_connections)())
    with override_settings(**AUTH_SETTINGS):
        old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        yield
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


@pytest.fixture(autouse=True)
def auth_settings(auth_database: None) -> Iterator[None]:
    """Every test runs with auth and sessions installed, and leaves no user or session behind."""
    with override_settings(**AUTH_SETTINGS):
        yield
        from django.contrib.auth.models import User
        from django.contrib.sessions.models import Session

        Session.objects.all().delete()
        User.objects.all().delete()


def make_scope(
    scope_type: str = "websocket",
    path: str = "/ws/",
    headers: list[tuple[bytes, bytes]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A scope as the gateway sends it (lists, not tuples), with the given headers."""
    scope: dict[str, Any] = {
        "type": scope_type,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [[name, value] for name, value in (headers or [])],
        "client": ["203.0.113.7", 51234],
        "reply_channel": "gateway.test!conn",
    }
    if extra.get("reply_channel", "") is None:
        del scope["reply_channel"]
        del extra["reply_channel"]
    if scope_type == "http":
        scope.update({"http_version": "1.1", "method": "GET", "scheme": "http"})
    elif scope_type == "websocket":
        scope.update({"scheme": "ws", "subprotocols": []})
    scope.update(extra)
    return scope


@pytest.fixture
def scope() -> Any:
    return make_scope


@sync_to_async
def create_user(username: str = "alice", password: str = PASSWORD) -> Any:
    from django.contrib.auth.models import User

    return User.objects.create_user(username, password=password)


@pytest.fixture
def new_user() -> Any:
    return create_user
