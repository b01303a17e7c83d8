"""One indexed table: what a typical view reads one row of."""

from benchapp.database import TABLE
from django.db import models


class Greeting(models.Model):
    key = models.IntegerField(unique=True)
    text = models.CharField(max_length=64)

    class Meta:
        app_label = "benchapp"
        db_table = TABLE
