"""The tracing tests: OS processes (test_tracing_e2e.py) and a real Gateway in process."""

from __future__ import annotations

import pytest

pytest.importorskip("opentelemetry.sdk.trace", reason="the tracing tests need the otel extra and the SDK")

from support.processes import pytest_runtest_makereport as pytest_runtest_makereport
