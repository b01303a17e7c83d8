"""HTTP routes of the plain Django site (the same as the other two sites' HTTP routes)."""

from benchapp.views import greeting
from django.urls import path
from django_site.views import hello

urlpatterns = [path("hello/", hello), path("db/", greeting)]
