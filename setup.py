"""Packaging for Switchboard.

The design card's folders (``gateway/``, ``protocols/``, ``consumers/``, ``specs/``) are the
``switchboard`` package's own folders (``switchboard/gateway/`` ...), so every module has one
import name and every tool that follows imports (mypy, IDEs, pip) sees one ordinary package;
docs/architecture.md, *Layout*, says why they are not mapped from the repository root.
"""

from setuptools import find_packages, setup

extras = {
    # switchboard/protocols/_http_uvicorn.py extends uvicorn's httptools, h11 and
    # websockets-sansio protocols through the methods and attributes it lists
    # (REQUIRED_METHODS / REQUIRED_ATTRIBUTES; close_timer arrived in 0.53). Every release
    # from 0.53 on passes (0.53.0 and 0.55.0 tested); no upper bound: check_uvicorn() stops
    # start-up with one clear line if a later release lacks one, and CI runs the HTTP
    # tests against the newest uvicorn and websockets as well (.ci/run).
    "http": ["uvicorn[standard]>=0.53", "websockets>=13"],
    "redis": ["redis[hiredis]>=5.0"],
    "udp": [],
    "mqtt": ["paho-mqtt>=2.0"],
    "smtp": ["aiosmtpd>=1.4"],
    "sms": ["twilio>=9.0"],
    "webrtc": ["aiortc>=1.9"],
    "metrics": ["prometheus_client>=0.20"],
    # OpenTelemetry tracing (docs/tracing.md): the API and SDK, and the OTLP/HTTP exporter
    # (the standard one; HTTP rather than gRPC keeps grpcio out). Django's own spans need
    # opentelemetry-instrumentation-django too, which is beta-versioned: the project's choice.
    "otel": ["opentelemetry-api>=1.25", "opentelemetry-sdk>=1.25", "opentelemetry-exporter-otlp-proto-http>=1.25"],
    # symmetric_encryption_keys (layer messages sealed with Fernet): cryptography is the
    # maintained implementation channels_redis uses too, so keys keep their meaning.
    "encryption": ["cryptography>=42"],
    # `switchboard run --reload`: uvicorn's file watcher (Rust notify: inotify/FSEvents, no polling).
    "reload": ["watchfiles>=0.20"],
}
# "all" is every protocol and metrics; tracing stays opt-in (redis-py imports an installed
# OpenTelemetry SDK by itself, which costs every process start-up time).
extras["all"] = sorted({req for name, reqs in extras.items() if name != "otel" for req in reqs})
extras["test"] = [
    "pytest>=8",
    "pytest-asyncio>=0.23",
    "pytest-timeout>=2.3",
    "hypothesis>=6.100",
    "cryptography>=42",  # self-signed certificates for the TLS tests
    "psutil>=5.9",  # process memory in the long-poll test
    # The tracing tests: the SDK's in-memory exporter, and Django's spans under the
    # handler's (ASGI requests need the asgi instrumentation too).
    "opentelemetry-api>=1.25",
    "opentelemetry-sdk>=1.25",
    "opentelemetry-instrumentation-django>=0.46b0",
    "opentelemetry-instrumentation-asgi>=0.46b0",
    # PostgreSQL driver for the benchmark's http-db scenario (python -m bench runs from
    # this venv) and for the durable-delivery fault tests (tests/durable: idempotent()'s
    # transactional records under concurrent workers); psycopg 3 is the driver Django
    # recommends, binary wheels need no libpq.
    "psycopg[binary]>=3.2",
    "ruff>=0.5",
    "mypy>=1.10",
]

setup(
    name="switchboard",
    version="0.1.0",
    description="A plugin-based multi-protocol gateway for Django in the design of Channels",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.11",
    # switchboard_redis: channels_redis's import paths (thin modules over switchboard).
    packages=find_packages(include=["switchboard", "switchboard.*", "switchboard_redis"]),
    package_data={"switchboard": ["specs/*.md", "py.typed", "console/static/*", "console/static/vendor/*"]},
    include_package_data=True,
    install_requires=[
        "django>=4.2",
        "asgiref>=3.7",
        "msgpack>=1.0",
        "pyyaml>=6.0",
    ],
    extras_require=extras,
    entry_points={"console_scripts": ["switchboard = switchboard.gateway.cli:main"]},
    classifiers=[
        "Framework :: Django",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: WWW/HTTP",
    ],
)
