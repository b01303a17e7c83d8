"""Plain Django URLs: served by workers through Django's own ASGI handler."""

import warnings

from chat import views
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import path
from longpolldemo import views as longpoll_views
from showcase import views as showcase_views
from thumbnails import views as thumbnail_views
from webrtcdemo import views as webrtc_views

urlpatterns = [
    path("", showcase_views.index, name="index"),
    path("feed/", showcase_views.feed, name="feed"),
    path("chat/<str:room>/", views.room, name="room"),
    path("chat/<str:room>/webrtc/", webrtc_views.room, name="webrtc-room"),
    path("longpoll/<str:room>/", longpoll_views.room, name="longpoll-room"),
    path("api/echo/", views.echo, name="echo"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/thumbnail/", thumbnail_views.create, name="thumbnail-create"),
    path("api/thumbnail/<int:pk>/", thumbnail_views.detail, name="thumbnail-detail"),
    path("admin/", admin.site.urls),
]

# With DEBUG on, the stylesheet and the admin's files are served by a Django view too, so
# they work when split into gateway + worker (`switchboard run` serves them before the
# view is reached, as runserver does). Nothing is added with DEBUG off: serve them with a
# proxy or WhiteNoise then.
urlpatterns += staticfiles_urlpatterns()
if settings.DEBUG:
    # Django's static view answers with a FileResponse, which Django's ASGI handler streams
    # with a warning per file ("must consume synchronous iterators"): expected here.
    warnings.filterwarnings("ignore", message="StreamingHttpResponse must consume synchronous iterators")
