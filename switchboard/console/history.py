"""The console's memory: one point per refresh, per series, for the last few minutes.

A fixed-size ring per series (``collections.deque(maxlen=...)``) keeps memory bounded
whatever runs for how long: 15 minutes at one point a second is 900 floats per series.
Series appear when first seen (a protocol enabled later) and are padded with ``None`` so
every series lines up with the shared time axis, which is the shape uPlot draws.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping
from typing import Any


class History:
    """Aligned time series: ``times[i]`` is when every ``series[name][i]`` was taken."""

    def __init__(self, span: float = 900.0, interval: float = 1.0) -> None:
        self.points = max(math.ceil(span / interval) + 1, 2)
        self.times: collections.deque[float] = collections.deque(maxlen=self.points)
        self.series: dict[str, collections.deque[float | None]] = {}

    def add(self, when: float, values: Mapping[str, float | None]) -> None:
        """Append one point of every series (series absent from ``values`` get None)."""
        self.times.append(when)
        for name, value in values.items():
            line = self.series.get(name)
            if line is None:
                line = self.series[name] = collections.deque([None] * (len(self.times) - 1), maxlen=self.points)
            line.append(None if value is None or not math.isfinite(value) else round(float(value), 4))
        for name, line in self.series.items():
            if name not in values:
                line.append(None)

    def point(self, index: int = -1) -> dict[str, Any]:
        """One point: ``{"t": time, "values": {series: value}}`` (the latest by default)."""
        return {"t": self.times[index], "values": {name: line[index] for name, line in self.series.items()}}

    def as_dict(self) -> dict[str, Any]:
        """Everything kept: ``{"t": [...], "series": {name: [...]}}``, oldest first."""
        return {"t": list(self.times), "series": {name: list(line) for name, line in self.series.items()}}
