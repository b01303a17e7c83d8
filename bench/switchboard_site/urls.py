"""HTTP routes of the Switchboard benchmark site."""

from benchapp.views import greeting
from django.urls import path
from switchboard_site.views import hello

urlpatterns = [path("hello/", hello), path("db/", greeting)]
