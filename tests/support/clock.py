"""A clock that tests move by hand, for expiry decided in this process.

Code that expires things takes a ``clock`` (``ChannelLayer(clock=...)`` for message and
membership expiry, ``MemoryStorage(clock=...)`` for marks and idle lists). Given a
:class:`FakeClock`, a test says "0.4 s later" with :meth:`FakeClock.advance` instead of
sleeping 0.4 s and hoping the machine kept up: the outcome no longer depends on load, and
the test takes no time. Expiry that happens elsewhere (Redis key TTLs, ``SET PX``) still
runs on real time; wait for it with :mod:`support.waiting`.
"""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """A callable returning seconds that only :meth:`advance` changes.

    It starts at a wall-clock-like value, so it can stand in for ``time.time`` as well as
    ``time.monotonic``: code only ever compares its readings with each other.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward (never back: no code expects time to reverse)."""
        if seconds < 0:
            raise ValueError(f"a clock does not go back ({seconds} s)")
        self.now += seconds
