"""Queue a thumbnail job and look it up: plain Django views that hand work to a worker."""

from __future__ import annotations

import json

from asgiref.sync import async_to_sync
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from switchboard.consumers import get_channel_layer
from switchboard.gateway.layers import ChannelFull

from .consumers import CHANNEL
from .models import Thumbnail


@csrf_exempt
@require_POST
def create(request: HttpRequest) -> JsonResponse:
    """``POST {"text": "Ada Lovelace"}``: 202 with the job's id; the work happens elsewhere.

    The row is created first, then the job names it: a worker never gets a job whose row
    it cannot see. The response does not wait for the worker. A sync view, as in the
    Channels docs: ``async_to_sync`` runs the send on the worker's event loop.
    """
    try:
        text = json.loads(request.body)["text"]
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": 'send JSON like {"text": "Ada Lovelace"}'}, status=400)
    if not isinstance(text, str) or not text.strip() or len(text) > 200:
        return JsonResponse({"error": "text must be 1 to 200 characters"}, status=400)
    thumbnail = Thumbnail.objects.create(text=text.strip())
    try:
        async_to_sync(get_channel_layer().send)(CHANNEL, {"type": "thumbnail.make", "id": thumbnail.pk})
    except ChannelFull:
        thumbnail.delete()
        return JsonResponse({"error": "too many thumbnails queued, try again later"}, status=503)
    return JsonResponse({**thumbnail.as_json(), "url": f"/api/thumbnail/{thumbnail.pk}/"}, status=202)


@require_GET
def detail(request: HttpRequest, pk: int) -> JsonResponse:
    """The job's state; ``svg`` and ``made_by`` once a worker has done it."""
    thumbnail = Thumbnail.objects.filter(pk=pk).first()
    if thumbnail is None:
        return JsonResponse({"error": "no such thumbnail"}, status=404)
    return JsonResponse(thumbnail.as_json())
