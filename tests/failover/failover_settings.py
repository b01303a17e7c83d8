"""Settings of the failover deployments: a chat over a Redis Cluster or behind Sentinel.

Environment (set by conftest.py):
- FAILOVER_HOSTS        the layer's ``hosts``, as JSON (cluster seeds, or a Sentinel entry)
- FAILOVER_PREFIX       the layer's key prefix (unique per test)
- FAILOVER_HTTP_BIND    where this gateway's http plugin listens
- FAILOVER_LOG_URL      a plain Redis (not the topology under test) for the consumers' records
"""

import json
import os

SECRET_KEY = "switchboard-failover-tests"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
ASGI_APPLICATION = "failover_routing.application"

SWITCHBOARD = {
    "LAYER": {
        "BACKEND": "redis",
        "CONFIG": {
            "hosts": json.loads(os.environ.get("FAILOVER_HOSTS", '["redis+cluster://127.0.0.1:7000"]')),
            "prefix": os.environ.get("FAILOVER_PREFIX", "sb-failover:"),
            # Every post is also a task on this channel: acknowledged only once a replica
            # has it, so a primary's death loses none of the acknowledged ones.
            # Room for the posts of the failover window (100/s) while its readers wait too.
            "durable": {"chatlog": {"durability": "replicated", "replica_timeout": 2.0, "capacity": 100000}},
        },
    },
    # What this suite tests is a Redis primary failing, not the gateways' verdict on a
    # worker: with 200 clients, 4 Switchboard processes and 6 Redis servers on a 2-core
    # machine that CI keeps busy, a live worker can go more than the default 1 s without
    # the CPU to send a heartbeat, be taken for dead and its connections moved (a
    # separate matter: docs/delivery.md, *When a live worker is taken for dead*).
    "GATEWAY": {"worker_timeout": 5.0},
    "PROTOCOLS": {
        "http": {
            "bind": [os.environ.get("FAILOVER_HTTP_BIND", "127.0.0.1:8000")],
            "backlog": 4096,
        }
    },
}
