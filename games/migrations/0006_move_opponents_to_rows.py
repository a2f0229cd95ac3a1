"""Move every game's opponents (`opponent_model`, `second_opponent`) into GameOpponent rows and every guessed
round's answers (`model_*`, `model2_*`) into RoundAnswer rows, values copied unchanged.

The reverse writes them back into the numbered columns; it refuses (rather than dropping answers) when a game
has more than the two opponents those columns can hold.
"""
from django.db import migrations

BATCH = 2000
PREFIXES = ("model", "model2")


def forward(apps, schema_editor):
    Game = apps.get_model("games", "Game")
    Round = apps.get_model("games", "Round")
    GameOpponent = apps.get_model("games", "GameOpponent")
    RoundAnswer = apps.get_model("games", "RoundAnswer")
    rows = []
    for game_id, first, second in Game.objects.order_by("pk").values_list("pk", "opponent_model",
                                                                          "second_opponent").iterator():
        for position, name in enumerate(name for name in (first, second) if name):
            rows.append(GameOpponent(game_id=game_id, position=position, model_name=name))
        if len(rows) >= BATCH:
            GameOpponent.objects.bulk_create(rows)
            rows = []
    GameOpponent.objects.bulk_create(rows)
    opponents = {(game_id, position): pk for pk, game_id, position in
                 GameOpponent.objects.values_list("pk", "game_id", "position").iterator()}
    fields = [f"{prefix}_{name}" for prefix in PREFIXES for name in ("lat", "lon", "distance_km", "score")]
    answers = []
    for values in (Round.objects.filter(guessed_at__isnull=False).order_by("pk")
                   .values_list("pk", "game_id", *fields).iterator()):
        round_id, game_id, *columns = values
        for position, prefix in enumerate(PREFIXES):
            lat, lon, km, score = columns[4 * position:4 * position + 4]
            opponent_id = opponents.get((game_id, position))
            if opponent_id is None or lat is None:
                continue
            answers.append(RoundAnswer(round_id=round_id, opponent_id=opponent_id, lat=lat, lon=lon,
                                       distance_km=km, score=score))
        if len(answers) >= BATCH:
            RoundAnswer.objects.bulk_create(answers)
            answers = []
    RoundAnswer.objects.bulk_create(answers)


def backward(apps, schema_editor):
    Game = apps.get_model("games", "Game")
    Round = apps.get_model("games", "Round")
    GameOpponent = apps.get_model("games", "GameOpponent")
    RoundAnswer = apps.get_model("games", "RoundAnswer")
    crowded = GameOpponent.objects.filter(position__gte=len(PREFIXES)).values_list("game_id", flat=True)
    if crowded.exists():
        raise RuntimeError(
            f"{crowded.distinct().count()} games have more than {len(PREFIXES)} AI opponents, which the numbered "
            "columns of migration 0005's predecessor cannot hold: unapplying would lose their answers.")
    names: dict[int, list[str]] = {}
    for game_id, name in GameOpponent.objects.order_by("game_id", "position").values_list("game_id", "model_name"):
        names.setdefault(game_id, []).append(name)
    for game in Game.objects.filter(pk__in=names.keys()):
        first, *rest = names[game.pk]
        game.opponent_model, game.second_opponent = first, (rest[0] if rest else "")
        game.save(update_fields=["opponent_model", "second_opponent"])
    updates: dict[int, dict] = {}
    for round_id, position, lat, lon, km, score in RoundAnswer.objects.values_list(
            "round_id", "opponent__position", "lat", "lon", "distance_km", "score"):
        prefix = PREFIXES[position]
        updates.setdefault(round_id, {}).update({f"{prefix}_lat": lat, f"{prefix}_lon": lon,
                                                 f"{prefix}_distance_km": km, f"{prefix}_score": score})
    for round_id, values in updates.items():
        Round.objects.filter(pk=round_id).update(**values)


class Migration(migrations.Migration):

    dependencies = [("games", "0005_opponent_rows")]

    operations = [migrations.RunPython(forward, backward)]
