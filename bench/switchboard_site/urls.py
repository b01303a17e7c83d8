"""HTTP routes of the Switchboard benchmark site."""

from django.urls import path
from switchboard_site.views import hello

urlpatterns = [path("hello/", hello)]
