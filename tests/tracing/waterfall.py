"""A trace as a waterfall page, for the docs' screenshot (docs/img/tracing.png).

Only used when the tracing test runs with ``SWITCHBOARD_TRACING_SCREENSHOT=docs/img``: it
draws the spans the processes exported (the same files the test checks), one row per
span, indented by depth, a bar from its start to its end, coloured by process.
"""

from __future__ import annotations

import html
from typing import Any

COLOURS = ("#2563eb", "#16a34a", "#d97706", "#9333ea")


def page(traces: list[tuple[str, list[dict[str, Any]]]]) -> str:
    pids = sorted({span["pid"] for _title, spans in traces for span in spans})
    colour = {pid: COLOURS[i % len(COLOURS)] for i, pid in enumerate(pids)}
    parts = [
        "<!doctype html><meta charset=utf-8><style>"
        "body{font:13px system-ui,sans-serif;margin:16px;color:#1d2330}h2{font-size:14px;margin:18px 0 6px}"
        ".row{display:grid;grid-template-columns:430px 1fr;align-items:center;height:24px}"
        ".name{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}.track{position:relative;height:14px;background:#f1f3f6}"
        ".bar{position:absolute;top:0;height:14px;border-radius:2px;min-width:2px}"
        ".muted{color:#6b7280;font-size:12px}.legend span{display:inline-block;margin-right:14px}"
        "</style>"
    ]
    names = {pid: ("gateway" if any(s["name"].startswith("receive") for _t, ss in traces for s in ss if s["pid"] == pid)
                   else "worker") for pid in pids}
    parts.append('<div class="legend">' + "".join(
        f'<span><b style="color:{colour[pid]}">■</b> {names[pid]} (pid {pid})</span>' for pid in pids) + "</div>")
    for title, spans in traces:
        start = min(span["start"] for span in spans)
        end = max(span["end"] for span in spans)
        width = max(end - start, 1)
        children: dict[str | None, list[dict[str, Any]]] = {}
        ids = {span["span_id"] for span in spans}
        for span in sorted(spans, key=lambda s: s["start"]):
            children.setdefault(span["parent_id"] if span["parent_id"] in ids else None, []).append(span)
        parts.append(f"<h2>{html.escape(title)} <span class=muted>{(end - start) / 1e6:.2f} ms</span></h2>")
        _rows(parts, children, None, 0, (start, width), colour)
    return "".join(parts)


def _rows(
    parts: list[str], children: dict[str | None, list[dict[str, Any]]], parent: str | None, depth: int,
    window: tuple[int, int], colour: dict[int, str],
) -> None:
    start, width = window
    for span in children.get(parent, []):
        left = (span["start"] - start) / width * 100
        size = (span["end"] - span["start"]) / width * 100
        attributes = span["attributes"]
        detail = " · ".join(str(attributes[k]) for k in ("switchboard.protocol", "switchboard.outcome") if k in attributes)
        parts.append(
            f'<div class=row><div class=name style="padding-left:{depth * 18}px">{html.escape(span["name"])} '
            f'<span class=muted>{html.escape(detail)} · {(span["end"] - span["start"]) / 1e6:.2f} ms</span></div>'
            f'<div class=track><div class=bar style="left:{left:.2f}%;width:{size:.2f}%;'
            f'background:{colour[span["pid"]]}"></div></div></div>'
        )
        _rows(parts, children, span["span_id"], depth + 1, window, colour)
