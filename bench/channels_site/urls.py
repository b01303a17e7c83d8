"""HTTP routes of the Channels benchmark site."""

from django.urls import path

from channels_site.views import hello

urlpatterns = [path("hello/", hello)]
