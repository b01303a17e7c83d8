"""``GET /db/``: one indexed PostgreSQL query through the ORM, answered as JSON."""

import random

from benchapp.database import ROWS
from benchapp.models import Greeting
from django.http import HttpRequest, JsonResponse


def greeting(request: HttpRequest) -> JsonResponse:
    row = Greeting.objects.get(key=random.randrange(ROWS))
    return JsonResponse({"key": row.key, "text": row.text})
