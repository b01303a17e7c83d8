"""Django models of the ``switchboard`` app: only a permission, no table.

``switchboard.manage`` lets a staff user act in the operator's console (replay or drop dead
letters); without it the console is read-only for them (docs/console.md). Django attaches
permissions to a model's content type, so an unmanaged, table-less model carries it:
``migrate`` creates the permission and nothing else.
"""

from django.db import models


class Console(models.Model):
    """The operator's console (a permission holder; it has no rows and no table)."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("manage", "Can act in the Switchboard console (replay or drop dead letters)")]
