"""Plain Django URLs of the promises deployments: the long-poll demo's page."""

from django.urls import path
from longpolldemo import views

urlpatterns = [path("longpoll/<str:room>/", views.room, name="longpoll-room")]
