"""Django URLs of the WebRTC e2e site: a readiness view and the example's WebRTC chat page."""

from django.http import HttpRequest, HttpResponse
from django.urls import path
from webrtcdemo import views


def ready(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


urlpatterns = [
    path("ready/", ready),
    path("chat/<str:room>/webrtc/", views.room),
]
