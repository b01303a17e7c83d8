"""What a process's raw counters mean, per protocol: shared by metrics, status and the console.

Every plugin counts the same standard names (``connections_opened``, ``messages_in``,
``messages_out``, ``events_full``..., see ``ProtocolPlugin``), per protocol it serves;
operators think in protocols: connections opened, messages in and out, refusals, drops.
This module is the one reading of those names, knowing no plugin in particular, so the Prometheus families
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
    """Which plugin counters mean "connection opened", "message in" and "message out"."""

    opened: tuple[str, ...] = ()
    inbound: tuple[str, ...] = ()
    outbound: tuple[str, ...] = ()


#: Every plugin counts these standard names (``ProtocolPlugin``: ``connections_opened``,
#: ``messages_in``, ``messages_out``), prefixed ``<protocol>.`` when it serves several
#: protocols. Nothing here knows any plugin: a third-party one is read the same way.
STANDARD_COUNTERS: Final = ProtocolCounters(opened=("connections_opened",), inbound=("messages_in",), outbound=("messages_out",))

# Plugin counters that mirror a layer or gateway counter (the layer refused the event, or
# raised): counting them again would count one lost message twice in drops. The standard
# events_* names (and the HTTP plugin's *.503_full answers) are left out by name.
_MIRRORED_DROPS: Final = ("events_full", "events_failed", "events_too_large", "events_not_replicated", "dropped_full")
#: Standard counters of messages a plugin dropped whose names do not say "dropped".
_STANDARD_DROPS: Final = ("replies_invalid",)

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


def protocols_of_plugin(plugin: str, protocols: Iterable[str] = ()) -> dict[str, ProtocolCounters]:
    """The protocols a plugin serves (its ``scope_types``) and the standard counters of each.

    One protocol: the bare names; several: ``<protocol>.connections_opened``... Without
    ``protocols`` (a reader that does not know them) the plugin's own name stands for its one.
    """
    served = list(protocols) or [plugin]
    if len(served) == 1:
        return {served[0]: STANDARD_COUNTERS}
    return {
        protocol: ProtocolCounters(
            opened=(f"{protocol}.connections_opened",),
            inbound=(f"{protocol}.messages_in",),
            outbound=(f"{protocol}.messages_out",),
        )
        for protocol in served
    }


def is_plugin_drop(counter: str) -> bool:
    """Whether a plugin counter counts messages the plugin itself dropped.

    Convention: such counters have ``dropped`` in their name (``dropped_oversize``,
    ``send_dropped_closed``), plus the standard ``replies_invalid``. The standard
    ``events_*`` counters only mirror a layer refusal or error and are not drops here:
    the layer (``full``) or the gateway (``events_failed``) counted that loss already.
    """
    if counter.rpartition(".")[2] in _STANDARD_DROPS:
        return True
    return "dropped" in counter and not any(mirror in counter for mirror in _MIRRORED_DROPS)


def is_plugin_refusal(counter: str) -> bool:
    """Whether a plugin counter counts clients (or requests) the plugin refused.

    Drops are not refusals (a drop loses an accepted message; a refusal tells the client
    no), so a counter that is a drop is never a refusal too.
    """
    return not is_plugin_drop(counter) and bool(_REFUSAL.search(counter))


def protocol_of_counter(plugin: str, counter: str, protocols: Iterable[str] = ()) -> str:
    """Which protocol of ``plugin`` a counter belongs to: ``websocket.rejected`` -> websocket.

    A plugin serving several protocols prefixes its counters with the protocol name (the
    HTTP plugin: ``http.*``, ``websocket.*``); otherwise the plugin's first protocol.
    """
    served = protocols_of_plugin(plugin, protocols)
    head, dot, _rest = counter.partition(".")
    if head in served or (dot and not protocols):
        return head  # without its protocols known (an older gateway's answer), a prefix names one
    return next(iter(served))


def protocol_totals(
    plugins: Mapping[str, Mapping[str, int]], protocols: Mapping[str, Iterable[str]] | None = None
) -> dict[str, dict[str, int]]:
    """``{protocol: {"opened", "in", "out"}}`` summed over plugins' standard counters (absent: 0).

    ``protocols``: each plugin's scope types (a plugin not named there stands for itself).
    """
    totals: dict[str, dict[str, int]] = {}
    for plugin, stats in plugins.items():
        for protocol, names in protocols_of_plugin(plugin, (protocols or {}).get(plugin, ())).items():
            entry = totals.setdefault(protocol, {"opened": 0, "in": 0, "out": 0})
            for key, counter_names in (("opened", names.opened), ("in", names.inbound), ("out", names.outbound)):
                entry[key] += counter_sum(stats, counter_names) or 0
    return totals


def refusal_counts(
    plugins: Mapping[str, Mapping[str, int]],
    gauges: Mapping[str, frozenset[str]],
    protocols: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, int]:
    """Refusals by ``"<protocol>.<counter>"`` (non-zero only), from plugins' counters."""
    refusals: dict[str, int] = {}
    for plugin, stats in plugins.items():
        plugin_gauges = gauges.get(plugin, frozenset())
        served = tuple((protocols or {}).get(plugin, ()))
        for counter, value in stats.items():
            if value and counter not in plugin_gauges and is_plugin_refusal(counter):
                protocol = protocol_of_counter(plugin, counter, served)
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
