"""The long-poll demo page: a Django view, served by workers like any other."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def room(request: HttpRequest, room: str) -> HttpResponse:
    return render(request, "longpolldemo/room.html", {"room": room})
