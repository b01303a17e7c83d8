"""The Celery side of the task comparison; runs only in the bench's own venv (bench/.env).

Redis broker, ``acks_late=True`` (acknowledged after the task ran, Celery's at-least-once),
the same no-op and 10 ms tasks as Switchboard's ``TaskConsumer``, recording the same way.
"""

from __future__ import annotations

import os
import time

from celery import Celery
from durable_site.recorder import record

app = Celery("bench_durable", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"))
app.conf.update(
    task_acks_late=True,
    task_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_default_queue=os.environ.get("BENCH_PREFIX", "bench-durable") + "celery",
)


@app.task(name="noop")
def noop(n: int, sent: float) -> None:
    record(n, sent, time.time())


@app.task(name="sleep")
def sleep(n: int, sent: float) -> None:
    started = time.time()
    time.sleep(0.01)  # a 10 ms task: I/O-bound work (prefork: one child process each)
    record(n, sent, started)
