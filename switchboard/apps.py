"""Django app config: ``INSTALLED_APPS = [..., "switchboard"]`` gives the manage.py commands
(``rungateway``, ``runworker``), the ``manage.py check`` checks of ``switchboard/checks.py`` and
the models of :func:`switchboard.consumers.idempotent` (``HandledEvent``) and the console's
``switchboard.manage`` permission (``Console``)."""

from django.apps import AppConfig


class SwitchboardConfig(AppConfig):
    name = "switchboard"
    verbose_name = "Switchboard"
    # Fixed here, so the app's migration never depends on a project's DEFAULT_AUTO_FIELD.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
