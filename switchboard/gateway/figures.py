"""What a process's raw counters mean, per protocol: shared by metrics, status and the console.

Plugins count in their own words (``http.requests``, ``websocket.messages_in``,
``messages_accepted``); operators think in protocols: connections opened, messages in and
out, refusals, drops. This module is the one translation, so the Prometheus families
(``gateway/metrics.py``), the ``switchboard.status`` answer (``gateway/observer.py``) and
the console (``switchboard/console/``) never disagree, and none of them needs the others'
dependencies (``prometheus_client`` stays optional).

It also reads the process's own resources (CPU seconds, resident memory) without psutil:
``time.process_time`` and ``/proc/self/statm`` are all a status answer needs.
"""

from __future__ import annotations

import os
import re
import resource
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class ProtocolCounters:
    """Which plugin counters mean "connection opened", "message in" and "message out".

    A name ending in ``*`` sums every counter with that prefix (``http.responses.*``).
    """

    opened: tuple[str, ...] = ()
    inbound: tuple[str, ...] = ()
    outbound: tuple[str, ...] = ()


#: Plugin name -> protocol (scope type) -> its counters. Plugins count in their own words,
#: so this table translates; a plugin not listed here is read with the standard names
#: ``connections_opened``, ``messages_in`` and ``messages_out`` under its own name.
PROTOCOL_COUNTERS: Final[dict[str, dict[str, ProtocolCounters]]] = {
    "http": {
        "http": ProtocolCounters(opened=("http.requests",), inbound=("http.requests",), outbound=("http.responses.*",)),
        "websocket": ProtocolCounters(
            opened=("websocket.connections",), inbound=("websocket.messages_in",), outbound=("websocket.messages_out",)
        ),
    },


    "webrtc": {"webrtc": ProtocolCounters(opened=("peers_opened",), inbound=("messages_in",), outbound=("messages_out",))},
}
STANDARD_COUNTERS: Final = ProtocolCounters(opened=("connections_opened",), inbound=("messages_in",), outbound=("messages_out",))

# Plugin counters that mirror a layer or gateway counter (the layer refused the event, or
# raised): counting them again would count one lost message twice in drops.
_MIRRORED_DROPS: Final = ("channel_full", "dropped_full", "layer_error", "dropped_too_large")

# A refusal: the client was told no (an HTTP 4xx/5xx the plugin answered itself, a refused
# session or subscription, a failed authentication, a rate limit). Matched on the counter
# name, the convention every plugin follows: "refused"/"rejected" in the name, or an HTTP
# status as a name segment (``http.413``, ``websocket.503_full``, ``signaling_403``).
_REFUSAL: Final = re.compile(r"refused|rejected|auth_failed|rate_limited|over_limit|(?:^|[._])[45]\d\d(?:$|[._])")


def counter_sum(stats: Mapping[str, int], names: Iterable[str]) -> int | None:
    """Sum of the named counters (``prefix*`` sums a family); None if none exists."""
    total = None
    for name in names:
        if name.endswith("*"):
            values = [v for k, v in stats.items() if k.startswith(name[:-1])]
        else:
            values = [stats[name]] if name in stats else []
        if values:
            total = (total or 0) + sum(values)
    return total


def protocols_of_plugin(plugin: str) -> dict[str, ProtocolCounters]:
    """The protocols a plugin serves and how to read each from its counters."""
    return PROTOCOL_COUNTERS.get(plugin, {plugin: STANDARD_COUNTERS})


def is_plugin_drop(counter: str) -> bool:
    """Whether a plugin counter counts messages the plugin itself dropped.

    Convention: such counters have ``dropped`` in their name (``dropped_oversize``,
    ``send_dropped_closed``). Those that only mirror a layer refusal or error
    (``dropped_channel_full``, ``events_dropped_full``, ``dropped_layer_error``) are left
    out: the layer (``full``) or the gateway (``events_failed``) counted that loss already.
    """
    return "dropped" in counter and not any(mirror in counter for mirror in _MIRRORED_DROPS)


def is_plugin_refusal(counter: str) -> bool:
    """Whether a plugin counter counts clients (or requests) the plugin refused.

    Drops are not refusals (a drop loses an accepted message; a refusal tells the client
    no), so a counter that is a drop is never a refusal too.
    """
    return not is_plugin_drop(counter) and bool(_REFUSAL.search(counter))


def protocol_of_counter(plugin: str, counter: str) -> str:
    """Which protocol of ``plugin`` a counter belongs to: ``websocket.rejected`` -> websocket.

    A plugin serving several protocols prefixes its counters with the protocol name (the
    HTTP plugin: ``http.*``, ``websocket.*``); otherwise the plugin's first protocol.
    """
    protocols = protocols_of_plugin(plugin)
    head = counter.partition(".")[0]
    return head if head in protocols else next(iter(protocols))


def protocol_totals(plugins: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """``{protocol: {"opened", "in", "out"}}`` summed over plugins' counters (absent: 0)."""
    totals: dict[str, dict[str, int]] = {}
    for plugin, stats in plugins.items():
        for protocol, names in protocols_of_plugin(plugin).items():
            entry = totals.setdefault(protocol, {"opened": 0, "in": 0, "out": 0})
            for key, counter_names in (("opened", names.opened), ("in", names.inbound), ("out", names.outbound)):
                entry[key] += counter_sum(stats, counter_names) or 0
    return totals


def refusal_counts(plugins: Mapping[str, Mapping[str, int]], gauges: Mapping[str, frozenset[str]]) -> dict[str, int]:
    """Refusals by ``"<protocol>.<counter>"`` (non-zero only), from plugins' counters."""
    refusals: dict[str, int] = {}
    for plugin, stats in plugins.items():
        plugin_gauges = gauges.get(plugin, frozenset())
        for counter, value in stats.items():
            if value and counter not in plugin_gauges and is_plugin_refusal(counter):
                protocol = protocol_of_counter(plugin, counter)
                reason = counter[len(protocol) + 1 :] if counter.startswith(protocol + ".") else counter
                refusals[f"{protocol}.{reason}"] = refusals.get(f"{protocol}.{reason}", 0) + value
    return refusals


# -- the process's own resources ------------------------------------------------------------

_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def cpu_seconds() -> float:
    """CPU time (user + system, all threads) this process has used."""
    return time.process_time()


def rss_bytes() -> int:
    """Resident memory now: ``/proc/self/statm`` on Linux, else the peak from ``getrusage``."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
