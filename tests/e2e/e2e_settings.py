"""The example project's settings plus test-only routes (a consumer that fails, on purpose)."""

from chatsite.settings import *  # noqa: F403

ASGI_APPLICATION = "e2e_routing.application"
