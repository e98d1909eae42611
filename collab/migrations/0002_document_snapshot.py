"""Store the content as a snapshot that lags the version by a few operations."""

from django.db import migrations, models
from django.db.models import F


def snapshot_at_current_version(apps, schema_editor):
    # Until now the content was rewritten on every commit, so it is at `version`.
    Document = apps.get_model("collab", "Document")
    Document.objects.update(snapshot_version=F("version"))


class Migration(migrations.Migration):
    dependencies = [("collab", "0001_initial")]

    operations = [
        migrations.RenameField("document", "content", "snapshot"),
        migrations.AddField(
            model_name="document",
            name="snapshot_version",
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.RunPython(snapshot_at_current_version, migrations.RunPython.noop),
    ]
