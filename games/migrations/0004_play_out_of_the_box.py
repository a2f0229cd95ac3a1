"""Photo title and date, the licence policy class, and the starter-pack marker on game images."""
from django.db import migrations, models


def classify_licences(apps, schema_editor):
    from games.licences import OPEN, licence_kind

    GameImage = apps.get_model("games", "GameImage")
    for image in GameImage.objects.only("pk", "licence_name").iterator():
        kind = licence_kind(image.licence_name)
        GameImage.objects.filter(pk=image.pk).update(licence_kind=kind, is_open_licence=kind == OPEN)


class Migration(migrations.Migration):
    dependencies = [("games", "0003_second_opponent")]

    operations = [
        migrations.AddField("gameimage", "title", models.CharField(
            blank=True, help_text="The photo's own title (shown after the guess).", max_length=255)),
        migrations.AddField("gameimage", "date_taken", models.CharField(blank=True, max_length=32)),
        migrations.AddField("gameimage", "licence_kind", models.CharField(
            db_index=True, default="unknown", editable=False, max_length=8)),
        migrations.AddField("gameimage", "pack", models.CharField(blank=True, db_index=True, default="",
                                                                  max_length=20)),
        migrations.RunPython(classify_licences, migrations.RunPython.noop),
    ]
