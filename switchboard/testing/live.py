"""``SwitchboardLiveServerTestCase``: a real gateway and worker for browser and client tests.

Like Django's ``LiveServerTestCase`` (and Channels' ``ChannelsLiveServerTestCase``), the
class starts a server before its tests and stops it after them; here it is Switchboard's
own: the HTTP plugin (HTTP and WebSockets) on a free loopback port and a worker running
the project's application, in one background thread on the in-memory layer, exactly
what ``switchboard run`` runs. Selenium, Playwright or a ``websockets`` client reach it at
``live_server_url`` / ``live_server_ws_url``.

It is a ``TransactionTestCase``: the server's threads use the database outside the test's
transaction, so data a test creates must be committed to be seen (Django's rule for live
servers). SQLite's in-memory test database works: Django shares it between threads.

``serve_static = True`` (the default) serves static files as ``runserver`` does, through
Django's ``ASGIStaticFilesHandler``. Set ``live_server_protocols`` to add other plugins'
options (``{"udp": {"bind": ["127.0.0.1:0"]}}``).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any, ClassVar

from django.test import TransactionTestCase, modify_settings

__all__ = ["ChannelsLiveServerTestCase", "SwitchboardLiveServerTestCase"]


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class _ServerThread(threading.Thread):
    """Runs gateway and worker on one event loop in this thread until told to stop."""

    def __init__(self, application: Any, config: Any) -> None:
        super().__init__(name="switchboard-live-server", daemon=True)
        self.application = application
        self.config = config
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the test class, which raises it
            self.error = exc
        finally:
            self.ready.set()

    async def _serve(self) -> None:
        from switchboard.gateway.layers import build_layer, set_channel_layer
        from switchboard.gateway.server import run_gateway
        from switchboard.gateway.worker import Worker

        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        layer = build_layer({"BACKEND": "memory"})
        set_channel_layer(layer)
        options = self.config.worker_options
        worker = Worker(self.application, layer, protocols=options.protocols, channels=options.channels)
        worker_task = self.loop.create_task(worker.run(self.stop_event, drain_timeout=2.0))

        def started(*_args: Any) -> None:
            self.ready.set()

        try:
            await run_gateway(self.config, layer=layer, stop=self.stop_event, started=started)
        finally:
            self.stop_event.set()
            await worker_task
            await layer.close()
            set_channel_layer(None)

    def terminate(self, timeout: float = 30.0) -> None:
        if self.loop is not None and self.stop_event is not None and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.stop_event.set)
            except RuntimeError:
                pass  # the loop has just finished
        self.join(timeout)


class SwitchboardLiveServerTestCase(TransactionTestCase):
    """Starts ``switchboard run`` on ``host`` and a free port for the tests of the class."""

    host: ClassVar[str] = "127.0.0.1"
    serve_static: ClassVar[bool] = True
    live_server_protocols: ClassVar[dict[str, dict[str, Any]]] = {}
    #: How long start-up may take before the class fails (seconds).
    live_server_start_timeout: ClassVar[float] = 30.0
    #: How long stopping waits for open connections and requests (seconds).
    live_server_drain_timeout: ClassVar[float] = 1.0

    _server_thread: ClassVar[_ServerThread | None] = None
    _allowed_hosts: ClassVar[Any]
    _port: ClassVar[int] = 0

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        from django.conf import settings

        from switchboard.gateway.cli import load_application
        from switchboard.gateway.config import from_django_settings

        config = from_django_settings()
        # As Django's LiveServerTestCase: the server's host is an allowed host (and so an
        # allowed WebSocket origin) while the class runs.
        cls._allowed_hosts = modify_settings(ALLOWED_HOSTS={"append": cls.host})
        cls._allowed_hosts.enable()
        cls._port = _free_port(cls.host)
        shown = f"[{cls.host}]" if ":" in cls.host else cls.host
        config.protocols = {"http": {"bind": [f"{shown}:{cls._port}"]}, **cls.live_server_protocols}
        # Between test classes, a connection a test left open need not be waited for.
        config.gateway.drain_timeout = cls.live_server_drain_timeout
        application = load_application(config)
        if cls.serve_static and "django.contrib.staticfiles" in settings.INSTALLED_APPS:
            application = _with_static_files(application)
        thread = _ServerThread(application, config)
        thread.start()
        if not thread.ready.wait(cls.live_server_start_timeout) or thread.error is not None:
            thread.terminate()
            cls._tearDownClassInternal()
            raise RuntimeError(f"the live Switchboard server did not start: {thread.error!r}") from thread.error
        cls._server_thread = thread

    @classmethod
    def _tearDownClassInternal(cls) -> None:
        cls._allowed_hosts.disable()
        super().tearDownClass()

    @classmethod
    def tearDownClass(cls) -> None:
        thread, cls._server_thread = cls._server_thread, None
        if thread is not None:
            thread.terminate()
        cls._tearDownClassInternal()

    @classmethod
    def _host_for_url(cls) -> str:
        return f"[{cls.host}]" if ":" in cls.host else cls.host

    @property
    def live_server_url(self) -> str:
        return f"http://{self._host_for_url()}:{self._port}"

    @property
    def live_server_ws_url(self) -> str:
        return f"ws://{self._host_for_url()}:{self._port}"


def _with_static_files(application: Any) -> Any:
    """``application`` with its HTTP requests for static files answered by Django's handler."""
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    from switchboard.consumers.routing import ProtocolTypeRouter

    mapping = getattr(application, "application_mapping", None)
    if isinstance(application, ProtocolTypeRouter) and mapping is not None and "http" in mapping:
        wrapped = dict(mapping)
        wrapped["http"] = ASGIStaticFilesHandler(mapping["http"])
        return ProtocolTypeRouter(wrapped)
    return application


#: Channels' name for it.
ChannelsLiveServerTestCase = SwitchboardLiveServerTestCase
