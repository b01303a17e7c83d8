"""One row per thumbnail job: the view creates it, the ``thumbnails`` worker completes it."""

from __future__ import annotations

from django.db import models


class Thumbnail(models.Model):
    """A small SVG badge made from ``text``; ``status`` goes from queued to done."""

    QUEUED = "queued"
    DONE = "done"

    text = models.CharField(max_length=200)
    status = models.CharField(max_length=10, default=QUEUED)
    svg = models.TextField(blank=True)
    #: Which process made it ("host:pid"): shows where named-channel work really runs.
    made_by = models.CharField(max_length=100, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    done_at = models.DateTimeField(null=True, blank=True)

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.pk,
            "text": self.text,
            "status": self.status,
            "svg": self.svg or None,
            "made_by": self.made_by or None,
        }
