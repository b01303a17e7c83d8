"""The page that joins a chat room over a WebRTC data channel."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

#: Where the gateway's webrtc plugin answers offers (its ``path`` option); the room
#: follows, so the peer's scope path routes it: ``webrtc/offer/<room>/``.
SIGNALING_PATH = "/webrtc/offer"


def room(request: HttpRequest, room: str) -> HttpResponse:
    return render(request, "webrtcdemo/room.html", {"room": room, "signaling_path": SIGNALING_PATH})
