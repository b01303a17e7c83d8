"""The example project's settings plus test-only routes (a consumer that fails, on purpose)."""

import os

from chatsite.settings import *  # noqa: F403
from chatsite.settings import SWITCHBOARD

ASGI_APPLICATION = "e2e_routing.application"

# Fast hashing: the tests check who is logged in, not how passwords are stored.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Split mode's connection worker reads no named channel: `switchboard worker thumbnails`
# (its channels given on the command line, which this does not change) does that work.
if os.environ.get("SWITCHBOARD_E2E_CONNECTIONS_ONLY") == "1":
    SWITCHBOARD = {**SWITCHBOARD, "WORKER": {"channels": []}}
