"""Ordinary Django views: they run unchanged behind the gateway."""

from __future__ import annotations

import json

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from .consumers import room_group


def room(request: HttpRequest, room: str) -> HttpResponse:
    """A chat room's page; 404 for a name that cannot be a room (its socket would get 403)."""
    if room_group(room) is None:
        raise Http404("No such room: use letters, digits, - and _ (up to 90)")
    return render(request, "chat/room.html", {"room": room})


@csrf_exempt
def echo(request: HttpRequest) -> JsonResponse:
    """GET echoes the query string, POST echoes the JSON body: a plain view, no Switchboard API."""
    if request.method == "POST":
        try:
            payload = json.loads(request.body or b"{}")
        except ValueError:
            return JsonResponse({"error": "body is not JSON"}, status=400)
        return JsonResponse({"method": "POST", "json": payload})
    return JsonResponse({"method": "GET", "query": request.GET.dict()})
