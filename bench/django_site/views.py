"""A plain Django view, for the HTTP scenario (same code on both sides)."""

from django.http import HttpRequest, JsonResponse


def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"hello": "world"})
