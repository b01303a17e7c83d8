"""The front page (every demo, and how to reach the ones a browser cannot) and the live feed page."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from .commands import terminal_commands

#: The feed's protocols, in the order of the legend, with what each one's events are.
FEED_SOURCES = [
    ("websocket", "chat posts"),
    ("webrtc", "data channel posts"),
    ("email", "mail received"),
    ("sms", "texts received"),
    ("mqtt", "sensor readings"),
    ("udp", "datagrams"),
    ("channel", "background jobs done"),
]


def index(request: HttpRequest) -> HttpResponse:
    return render(request, "showcase/index.html", {"commands": terminal_commands()})


def feed(request: HttpRequest) -> HttpResponse:
    return render(request, "showcase/feed.html", {"sources": FEED_SOURCES, "commands": terminal_commands()})
