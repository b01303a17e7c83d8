"""Django URLs of the reliability tests' worker (``rel_settings.ROOT_URLCONF``)."""

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from rel_uploads import summary


@csrf_exempt
def upload(request: HttpRequest) -> HttpResponse:
    """A body read through Django's own handler; Django does not say in how many events."""
    return HttpResponse(summary(request.body, 0), content_type="application/json")


urlpatterns = [path("upload/django/", upload)]
