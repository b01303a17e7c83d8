"""Django app config: ``INSTALLED_APPS = [..., "switchboard"]`` gives the manage.py commands
(``rungateway``, ``runworker``) and the ``manage.py check`` checks of ``switchboard/checks.py``."""

from django.apps import AppConfig


class SwitchboardConfig(AppConfig):
    name = "switchboard"
    verbose_name = "Switchboard"
    # Fixed, so the app's migration never changes with a project's DEFAULT_AUTO_FIELD.
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
