"""HTTP routes of the Channels benchmark site."""

from channels_site.views import hello
from django.urls import path

urlpatterns = [path("hello/", hello)]
