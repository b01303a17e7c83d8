"""What the fault tests' consumers record: every handler run, and each task's one effect."""

from django.db import models


class Handling(models.Model):
    """One handler run that got to its end (a redelivery makes a second row)."""

    kind = models.CharField(max_length=16)
    key = models.CharField(max_length=200)  # Message-ID, topic/number, MessageSid, task number
    event_id = models.CharField(max_length=200)
    delivery = models.IntegerField()
    pid = models.IntegerField()


class TaskEffect(models.Model):
    """The work of a task: written by an idempotent handler, so once per task."""

    key = models.CharField(max_length=200)
