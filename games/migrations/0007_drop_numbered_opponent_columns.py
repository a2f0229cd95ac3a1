"""Drop the numbered opponent columns, now held by GameOpponent and RoundAnswer rows (0006)."""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [("games", "0006_move_opponents_to_rows")]

    operations = [
        # A default first, so that unapplying can add the column back to a table that has rows (0006 then fills it).
        migrations.AlterField("game", "opponent_model", models.CharField(max_length=100, default="")),
        migrations.RemoveField("game", "opponent_model"),
        migrations.RemoveField("game", "second_opponent"),
        *[migrations.RemoveField("round", f"{prefix}_{name}")
          for prefix in ("model", "model2") for name in ("lat", "lon", "distance_km", "score")],
    ]
