"""Django app config, so ``INSTALLED_APPS = [..., "switchboard"]`` gives the manage.py commands."""

from django.apps import AppConfig


class SwitchboardConfig(AppConfig):
    name = "switchboard"
    verbose_name = "Switchboard"
    # Fixed, so the app's migration never changes with a project's DEFAULT_AUTO_FIELD.
    default_auto_field = "django.db.models.AutoField"
