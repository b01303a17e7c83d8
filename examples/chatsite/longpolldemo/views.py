"""The long-poll demo page: a Django view, served by workers like any other."""

from __future__ import annotations

from chat.consumers import room_group
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render


def room(request: HttpRequest, room: str) -> HttpResponse:
    if room_group(room) is None:
        raise Http404("No such room: use letters, digits, - and _ (up to 90)")
    return render(request, "longpolldemo/room.html", {"room": room})
