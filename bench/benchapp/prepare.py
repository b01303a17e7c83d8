"""Create and fill the benchmark table once (idempotent): ``python -m benchapp.prepare``.

Run by the harness before the ``http-db`` scenario, with the plain Django site's
settings, from the bench directory. Leaves an existing, complete table alone.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")
    import django

    django.setup()
    from benchapp.database import ROWS
    from benchapp.models import Greeting
    from django.db import connection

    with connection.cursor() as cursor:
        exists = Greeting._meta.db_table in connection.introspection.table_names(cursor)
    if exists and Greeting.objects.count() == ROWS:
        print(f"benchapp: {Greeting._meta.db_table} ready ({ROWS} rows)")
        return 0
    with connection.schema_editor() as editor:
        if exists:
            editor.delete_model(Greeting)
        editor.create_model(Greeting)
    Greeting.objects.bulk_create(Greeting(key=n, text=f"hello {n}") for n in range(ROWS))
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Greeting._meta.db_table}")
    print(f"benchapp: created {Greeting._meta.db_table} with {ROWS} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
