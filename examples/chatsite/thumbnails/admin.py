"""The thumbnail jobs in the Django admin: what the named-channel worker did, and where."""

from django.contrib import admin

from .models import Thumbnail


@admin.register(Thumbnail)
class ThumbnailAdmin(admin.ModelAdmin):
    list_display = ("id", "text", "status", "made_by", "created", "done_at")
    list_filter = ("status",)
    search_fields = ("text", "made_by")
    readonly_fields = ("svg", "made_by", "created", "done_at")
