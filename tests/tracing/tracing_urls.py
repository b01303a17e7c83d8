"""One Django view, so Django's own spans (its instrumentation's) can nest under the handler's."""

from django.http import HttpRequest, HttpResponse
from django.urls import path


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"hello from django", content_type="text/plain")


urlpatterns = [path("hello", hello)]
