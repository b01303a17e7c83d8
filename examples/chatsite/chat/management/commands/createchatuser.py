"""``manage.py createchatuser alice``: a user who may post in the example chat.

Django's ``createsuperuser`` works too, but a chat poster needs no admin rights. The
password is asked for (twice) unless ``--password`` is given, which scripts and the
end-to-end tests use.
"""

from __future__ import annotations

import getpass
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Create (or reset the password of) a user who can log in and post in the chat."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--password", help="the password (default: ask for it)")

    def handle(self, *args: Any, **options: Any) -> None:
        username: str = options["username"]
        password: str | None = options["password"]
        if password is None:
            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Password (again): "):
                raise CommandError("the passwords differ")
        if not password:
            raise CommandError("the password may not be empty")
        user_model = get_user_model()
        user, created = user_model._default_manager.get_or_create(**{user_model.USERNAME_FIELD: username})
        user.set_password(password)
        user.save()
        self.stdout.write(f"{'Created' if created else 'Updated'} user {username!r}; log in at /accounts/login/")
