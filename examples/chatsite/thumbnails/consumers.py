"""The worker side of the thumbnail jobs: a consumer of the named channel ``thumbnails``."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from django.utils import timezone
from showcase.feed import publish_sync

from switchboard.consumers import SyncConsumer

from .models import Thumbnail
from .render import badge_svg

logger = logging.getLogger("thumbnails")

#: The named channel, as in ``switchboard worker thumbnails`` and ``ChannelNameRouter``.
CHANNEL = "thumbnails"


class ThumbnailConsumer(SyncConsumer):
    """Makes the thumbnail of each ``thumbnail.make`` job: ``{"type": ..., "id": <pk>}``.

    Sync because the work is ORM calls and CPU: each handler runs in a worker thread, not on
    the event loop. Stateless, since any worker reading ``thumbnails`` may get any job, and
    forgiving: a job naming no row is logged and dropped, never retried (the layer delivers
    at most once, so a job is done once or, if a worker dies mid-way, not at all).
    """

    def thumbnail_make(self, message: dict[str, Any]) -> None:
        job_id = message.get("id")
        if not isinstance(job_id, int):
            logger.warning("thumbnail job without an integer id dropped: %r", job_id)
            return
        thumbnail = Thumbnail.objects.filter(pk=job_id, status=Thumbnail.QUEUED).first()
        if thumbnail is None:
            logger.warning("thumbnail job %s: no queued thumbnail with that id", job_id)
            return
        thumbnail.svg = badge_svg(thumbnail.text)
        thumbnail.status = Thumbnail.DONE
        thumbnail.made_by = f"{socket.gethostname()}:{os.getpid()}"
        thumbnail.done_at = timezone.now()
        thumbnail.save(update_fields=["svg", "status", "made_by", "done_at"])
        logger.info("thumbnail %s made by %s", job_id, thumbnail.made_by)
        publish_sync(self.channel_layer, "channel", f"thumbnail {job_id} ({thumbnail.text!r}) made by {thumbnail.made_by}")
