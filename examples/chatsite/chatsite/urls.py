"""Plain Django URLs: served by workers through Django's own ASGI handler."""

from chat import views
from django.contrib.auth import views as auth_views
from django.urls import path
from longpolldemo import views as longpoll_views
from thumbnails import views as thumbnail_views
from webrtcdemo import views as webrtc_views

urlpatterns = [
    path("", views.index, name="index"),
    path("chat/<str:room>/", views.room, name="room"),
    path("chat/<str:room>/webrtc/", webrtc_views.room, name="webrtc-room"),
    path("longpoll/<str:room>/", longpoll_views.room, name="longpoll-room"),
    path("api/echo/", views.echo, name="echo"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/thumbnail/", thumbnail_views.create, name="thumbnail-create"),
    path("api/thumbnail/<int:pk>/", thumbnail_views.detail, name="thumbnail-detail"),
]
