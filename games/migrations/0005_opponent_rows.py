"""Issue 15 §3: a game's AI opponents and their answers as rows (GameOpponent, RoundAnswer) instead of numbered
columns. This step adds the tables; 0006 moves the data; 0007 drops the numbered columns."""
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [("games", "0004_play_out_of_the_box")]

    operations = [
        migrations.CreateModel(
            name="GameOpponent",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("position", models.PositiveSmallIntegerField()),
                ("model_name", models.CharField(max_length=100)),
                ("game", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="opponent_rows",
                                           to="games.game")),
            ],
            options={"ordering": ["game", "position"]},
        ),
        migrations.CreateModel(
            name="RoundAnswer",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("lat", models.FloatField()),
                ("lon", models.FloatField()),
                ("distance_km", models.FloatField()),
                ("score", models.PositiveIntegerField()),
                ("opponent", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="answers",
                                               to="games.gameopponent")),
                ("round", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="answers",
                                            to="games.round")),
            ],
            options={"ordering": ["round", "opponent__position"]},
        ),
        migrations.AddConstraint(
            model_name="gameopponent",
            constraint=models.UniqueConstraint(fields=("game", "position"), name="one_opponent_per_game_position")),
        migrations.AddConstraint(
            model_name="gameopponent",
            constraint=models.UniqueConstraint(fields=("game", "model_name"), name="one_opponent_per_game_model")),
        migrations.AddIndex(
            model_name="gameopponent", index=models.Index(fields=["model_name"], name="gameopponent_model")),
        migrations.AddConstraint(
            model_name="roundanswer",
            constraint=models.UniqueConstraint(fields=("round", "opponent"), name="one_answer_per_round_opponent")),
    ]
