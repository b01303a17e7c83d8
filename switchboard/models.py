"""Database models of the ``switchboard`` app.

* :class:`HandledEvent`: the idempotency records of durable consumers. Only
  :func:`switchboard.consumers.durable.idempotent` (with the default ``store="db"``) uses
  them; a project that never uses it never touches the table (but ``migrate`` makes it).
* :class:`Console`: only a permission, no table. ``switchboard.manage`` lets a staff user
  act in the operator's console (replay or drop dead letters); without it the console is
  read-only for them (docs/console.md). Django attaches permissions to a model's content
  type, so an unmanaged, table-less model carries it: ``migrate`` creates the permission
  and nothing else.
"""

from __future__ import annotations

import datetime

from django.db import models
from django.utils import timezone


class HandledEventQuerySet(models.QuerySet["HandledEvent"]):
    def prune(self, older_than: datetime.timedelta) -> int:
        """Delete records older than ``older_than``; how many were deleted.

        Keep them longer than a message can stay stored before its last redelivery (its
        wait on the layer, plus ``max_deliveries`` times the visibility timeout, plus the
        time a dead letter may wait for a replay).
        """
        deleted, _ = self.filter(handled_at__lt=timezone.now() - older_than).delete()
        return deleted


class HandledEvent(models.Model):
    """One event a handler finished, recorded in the same transaction as its work.

    ``key`` is a digest of the handler and the event's key (its event id by default), so
    keys of any length and from any handler fit one unique index; ``label`` keeps the
    readable part for whoever looks at the table.
    """

    key = models.CharField(max_length=64, unique=True)
    label = models.CharField(max_length=255)
    handled_at = models.DateTimeField(default=timezone.now, db_index=True)

    objects = HandledEventQuerySet.as_manager()

    class Meta:
        db_table = "switchboard_handled_event"
        verbose_name = "handled event"

    def __str__(self) -> str:
        return self.label


class Console(models.Model):
    """The operator's console (a permission holder; it has no rows and no table)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("manage", "Can act in the Switchboard console (replay or drop dead letters)")]
