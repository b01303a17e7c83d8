"""The page that joins a chat room over a WebRTC data channel."""

from __future__ import annotations

from chat.consumers import room_group
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

#: Where the gateway's webrtc plugin answers offers (its ``path`` option); the room
#: follows, so the peer's scope path routes it: ``webrtc/offer/<room>/``.
SIGNALING_PATH = "/webrtc/offer"


def room(request: HttpRequest, room: str) -> HttpResponse:
    if room_group(room) is None:
        raise Http404("No such room: use letters, digits, - and _ (up to 90)")
    return render(request, "webrtcdemo/room.html", {"room": room, "signaling_path": SIGNALING_PATH})
