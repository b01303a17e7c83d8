"""The ``switchboard.manage`` permission of the operator's console (``switchboard.models.Console``)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("switchboard", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="Console",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
            ],
            options={
                "permissions": [("manage", "Can act in the Switchboard console (replay or drop dead letters)")],
                "managed": False,
                "default_permissions": (),
            },
        ),
    ]
