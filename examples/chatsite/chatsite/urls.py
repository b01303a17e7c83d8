"""Plain Django URLs: served by workers through Django's own ASGI handler."""

from chat import views
from django.urls import path

urlpatterns = [
    path("", views.index, name="index"),
    path("chat/<str:room>/", views.room, name="room"),
    path("api/echo/", views.echo, name="echo"),
]
