"""A URLconf where ``/hello/`` is an async view: the path choice must follow ROOT_URLCONF."""

from django.urls import path

from djangohttp.parity_site import async_hello

urlpatterns = [path("hello/", async_hello)]
