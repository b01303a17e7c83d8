"""Django app config, so ``INSTALLED_APPS = [..., "switchboard"]`` gives the manage.py commands."""

from django.apps import AppConfig


class SwitchboardConfig(AppConfig):
    name = "switchboard"
    verbose_name = "Switchboard"
