"""HTTP routes of the Channels benchmark site."""

from benchapp.views import greeting
from channels_site.views import hello
from django.urls import path

urlpatterns = [path("hello/", hello), path("db/", greeting)]
