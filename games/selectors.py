"""Read side of play mode: opponents, playable images, what a player may see of a game, summaries, leaderboards.

The true position and the model's guess of a round only appear in `round_reveal`, which callers use for rounds the
player has already guessed; `round_public` is all a player sees before guessing.
"""
from __future__ import annotations

import datetime as dt
import statistics

from django.conf import settings
from django.db.models import (Avg, Case, CharField, Count, Exists, F, OuterRef, Prefetch, Q, QuerySet, Subquery, Sum,
                              Value, When)
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from games.licences import playable_kinds
from games.models import STARTER_PACK, Game, GameImage, GameOpponent, ImageReport, ModelGuess, Round, RoundAnswer


def starter_pack_enabled() -> bool:
    """GEOWEB_GAME_STARTER_PACK: "auto" (the default) is on unless GEOWEB_GAME_IMAGES names the operator's own
    images, so that the two are never mixed silently; "1" or "0" decide."""
    value = str(settings.GAME_STARTER_PACK).strip().lower()
    if value in ("", "auto"):
        return not settings.GAME_IMAGES_DIR
    return value in ("1", "true", "yes", "on")


class GameNotFound(Exception):
    """No such game, or it belongs to someone else (the two are not told apart)."""


def untrained_models() -> set[str]:
    """Names of the installed bundles marked untrained (random weights): never a game opponent."""
    from predictor import registry

    return {bundle.name for bundle in registry.installed_bundles() if bundle.untrained}


def _guess_counts() -> dict[str, int]:
    counts = dict(ModelGuess.objects.values_list("model_name").annotate(n=Count("id"))
                  .values_list("model_name", "n"))
    for name in untrained_models():
        counts.pop(name, None)
    return counts


def opponent_models() -> list[str]:
    """The usual opponents: the configured models that have stored guesses, else the busiest model (first is the
    default opponent and the reference model of curation)."""
    counts = _guess_counts()
    if settings.GAME_OPPONENT_MODELS:
        return [name for name in settings.GAME_OPPONENT_MODELS if counts.get(name)]
    if not counts:
        return []
    return [max(sorted(counts), key=lambda name: counts[name])]


def choosable_opponents() -> list[str]:
    """Every model a game may be played against: the configured ones with stored guesses (GEOWEB_GAME_OPPONENTS),
    else every model with stored guesses, the busiest first."""
    counts = _guess_counts()
    if settings.GAME_OPPONENT_MODELS:
        return [name for name in settings.GAME_OPPONENT_MODELS if counts.get(name)]
    return sorted(counts, key=lambda name: (-counts[name], name))


def default_opponents() -> list[str]:
    """The AI opponents of a game whose player chose none: GEOWEB_GAME_DEFAULT_OPPONENTS (at most
    GAME_MAX_OPPONENTS, those with stored guesses), else the first of `opponent_models()` (the busiest model, or the
    first configured one)."""
    available = choosable_opponents()
    chosen = [name for name in settings.GAME_DEFAULT_OPPONENTS if name in available][:settings.GAME_MAX_OPPONENTS]
    return chosen or opponent_models()[:1]


def playable_images(*, model_name: str | list[str], difficulty: str = "mixed") -> QuerySet[GameImage]:
    """Active images with a stored file and a guess by `model_name` (by each of them, for a list), whose licence is
    playable under the policy (games.licences) or that staff published with a reason; the starter pack's photos only
    while GEOWEB_GAME_STARTER_PACK is on.

    `difficulty` "easy", "medium" or "hard" keeps the images of that difficulty; "mixed" keeps them all.
    """
    names = [model_name] if isinstance(model_name, str) else list(model_name)
    images = (GameImage.objects.filter(active=True)
              .filter(Q(licence_kind__in=playable_kinds(commercial=settings.GAME_COMMERCIAL))
                      | ~Q(activation_reason="")).exclude(image=""))
    if not starter_pack_enabled():
        images = images.exclude(pack=STARTER_PACK)
    for name in names:
        images = images.filter(Exists(ModelGuess.objects.filter(image=OuterRef("pk"), model_name=name)))
    if difficulty != "mixed":
        images = images.filter(difficulty=difficulty)
    return images


def playable_count() -> int:
    names = default_opponents()
    return playable_images(model_name=names).count() if names else 0


def playability() -> dict:
    """How many images a default game can draw from, and why the others cannot be played: for the import's
    report and the home page. `reasons` is a list of (count, why) for the images that are not playable."""
    opponents = default_opponents()
    images = GameImage.objects.all()
    total = images.count()
    playable = playable_images(model_name=opponents).count() if opponents else 0
    open_kinds = playable_kinds(commercial=settings.GAME_COMMERCIAL)
    licensed = Q(licence_kind__in=open_kinds) | ~Q(activation_reason="")
    reasons = []

    def add(count: int, why: str) -> None:
        if count:
            reasons.append((count, why))

    pool = images
    if not starter_pack_enabled():
        add(pool.filter(pack=STARTER_PACK).count(), "are in the starter pack, which is switched off "
                                                    "(GEOWEB_GAME_STARTER_PACK, or GEOWEB_GAME_IMAGES is set)")
        pool = pool.exclude(pack=STARTER_PACK)
    add(pool.filter(image="").count(), "have no stored photo")
    pool = pool.exclude(image="")
    add(pool.filter(active=False).count(), "are withdrawn from play (inactive)")
    pool = pool.filter(active=True)
    if settings.GAME_COMMERCIAL:
        add(pool.filter(licence_kind="nc", activation_reason="").count(),
            "have a non-commercial licence and this site is commercial (GEOWEB_GAME_COMMERCIAL=1): a staff reason "
            "is needed")
    add(pool.exclude(licensed).exclude(licence_kind="nc").count(),
        "have a licence that needs a staff reason (no derivatives, all rights reserved or unknown)")
    pool = pool.filter(licensed)
    if opponents:
        for name in opponents:
            add(pool.exclude(Exists(ModelGuess.objects.filter(image=OuterRef("pk"), model_name=name))).count(),
                f"have no answer of {name}")
    else:
        add(pool.count(), "have no answer of any trained model")
    return {"total": total, "playable": playable, "opponents": opponents, "reasons": reasons,
            "untrained": sorted(untrained_models())}


def playability_lines() -> list[str]:
    state = playability()
    against = " and ".join(state["opponents"]) or "no opponent"
    lines = [f"playable: {state['playable']} of {state['total']} game images (against {against})"]
    lines += [f"  not playable: {count} {why}" for count, why in state["reasons"]]
    if state["untrained"] and not state["opponents"]:
        lines.append(f"  {', '.join(state['untrained'])} is untrained (random weights), so it is never a game "
                     "opponent: import published results (--predictions) or install a trained model and recompute")
    return lines


def credits() -> list[dict]:
    """The attribution of every photo a game may show (the playable images), sorted by author and title."""
    images = GameImage.objects.filter(active=True).exclude(image="")
    if not starter_pack_enabled():
        images = images.exclude(pack=STARTER_PACK)
    rows = [attribution(image) for image in images.only("author", "title", "source_url", "licence_name",
                                                           "licence_url")]
    return sorted(rows, key=lambda row: (row["author"].lower(), row["title"].lower(), row["source_url"]))


def game_for_player(*, key, user, session_key: str | None) -> Game:
    """The game with this key if it belongs to this user (or, for anonymous players, this session)."""
    try:
        game = Game.objects.select_related("user", "challenge_of").get(key=key)
    except (Game.DoesNotExist, ValueError, TypeError):
        raise GameNotFound(key) from None
    if not owns(game=game, user=user, session_key=session_key):
        raise GameNotFound(key)
    return game


def owns(*, game: Game, user, session_key: str | None) -> bool:
    if game.user_id is not None:
        return bool(user is not None and user.is_authenticated and user.pk == game.user_id)
    return bool(session_key) and game.session_key == session_key


def game_by_challenge(*, token: str) -> Game:
    """A finished game that others can replay; unfinished games are not offered as challenges."""
    try:
        return Game.objects.select_related("user").get(challenge_token=token, finished_at__isnull=False)
    except Game.DoesNotExist:
        raise GameNotFound(token) from None


def photo_round(*, token: str, user, session_key: str | None) -> Round:
    """The round whose photo `token` names, if it is the player's and has been shown to them."""
    try:
        round_ = Round.objects.select_related("game", "image").get(photo_token=token)
    except Round.DoesNotExist:
        raise GameNotFound(token) from None
    if round_.started_at is None or not owns(game=round_.game, user=user, session_key=session_key):
        raise GameNotFound(token)
    return round_


def round_public(round_: Round) -> dict:
    """What the player sees before guessing: the photo's opaque URL and nothing else about it. The attribution
    (owner, title, photo page) would identify the source, so it waits for the reveal."""
    return {
        "index": round_.index,
        "photo_url": reverse("game-photo", args=[round_.photo_token]),
        "guessed": round_.is_guessed,
    }


def attribution(image: GameImage) -> dict:
    """Author, title, photo page and licence of a game image: shown at the reveal, in the summary, on /credits/."""
    return {"author": image.author, "title": image.title, "source_url": image.source_url,
            "licence_name": image.licence_name or "unknown licence", "licence_url": image.licence_url}


def rounds_with_answers(game: Game) -> list[Round]:
    """A game's rounds in order, with their photos and the AIs' answers (two queries)."""
    return list(game.rounds.select_related("image").order_by("index").prefetch_related(
        Prefetch("answers", queryset=RoundAnswer.objects.select_related("opponent"))))


def _answers(round_: Round) -> list[RoundAnswer]:
    """The AIs' answers of a round in the game's order of opponents (none before the player's guess)."""
    return sorted(round_.answers.all(), key=lambda answer: answer.opponent.position)


def _ais(round_: Round) -> list[dict]:
    """The AI opponents' answers of a guessed round, in the game's order of opponents."""
    return [{"name": a.opponent.model_name, "lat": a.lat, "lon": a.lon, "distance_km": a.distance_km,
             "score": a.score, "player_closer": round_.distance_km < a.distance_km}
            for a in _answers(round_)]


def round_reveal(round_: Round) -> dict:
    """A guessed round in full: truth, the player's and the AIs' guesses with the places they name, distances,
    scores and the photo's attribution.

    `model*` keys are the first opponent's; `ais` lists every opponent (1..N, in the game's order) with its name.
    The answers are read from `round_.answers` (prefetched by rounds_with_answers, or set by submit_guess).
    """
    return _with_places([_reveal(round_)])[0]


def _with_places(reveals: list[dict]) -> list[dict]:
    """Name the place of the truth and of every guess (country from the shipped Natural Earth data, offline; see
    predictor.places), in one lookup for all the rounds."""
    from predictor.places import reverse_geocode

    spots = []
    for data in reveals:
        spots += [data["truth"], data["guess"], *data["ais"]]
    # The truths and the AIs' answers repeat across players: remember them, and look up only the rest.
    keys = [(round(spot["lat"], 5), round(spot["lon"], 5)) for spot in spots]
    missing = sorted({key for key in keys if key not in _PLACES})
    for key, place in zip(missing, reverse_geocode(missing)):
        if len(_PLACES) >= _PLACES_MAX:
            _PLACES.clear()
        _PLACES[key] = (("off " if place["offshore"] else "") + place["country"], place["region"])
    for spot, key in zip(spots, keys):
        spot["place"], spot["region"] = _PLACES[key]
    return reveals


_PLACES: dict[tuple[float, float], tuple[str, str]] = {}
_PLACES_MAX = 100_000


def _reveal(round_: Round) -> dict:
    data = round_public(round_)
    ais = _ais(round_)
    first = ais[0]
    data.update(attribution(round_.image))
    data.update({
        "truth": {"lat": round_.image.lat, "lon": round_.image.lon},
        "guess": {"lat": round_.guess_lat, "lon": round_.guess_lon},
        "distance_km": round_.distance_km,
        "score": round_.score,
        "model": {"lat": first["lat"], "lon": first["lon"]},
        "model_distance_km": first["distance_km"],
        "model_score": first["score"],
        "ais": ais,
        "seconds_taken": round_.seconds_taken,
        "better_than_model": first["player_closer"],
        "better_than_all_ais": all(ai["player_closer"] for ai in ais),
    })
    return data


def game_state(game: Game, rounds: list[Round] | None = None) -> dict:
    """The player's view of a game: rounds shown so far (guessed ones revealed), totals, what comes next."""
    if rounds is None:
        rounds = rounds_with_answers(game)
    shown = [r for r in rounds if r.started_at is not None]
    guessed = [r for r in rounds if r.is_guessed]
    revealed = _with_places([_reveal(r) for r in shown if r.is_guessed])
    current = next((r for r in rounds if not r.is_guessed), None)
    return {
        "key": str(game.key),
        "mode": game.mode,
        "opponent": game.opponents[0],
        "rounds_total": len(rounds),
        "finished": game.finished_at is not None,
        "current_index": current.index if current is not None else None,
        "current_started": bool(current is not None and current.started_at is not None),
        "rounds": [revealed.pop(0) if r.is_guessed else round_public(r) for r in shown],
        "score": sum(r.score for r in guessed),
        "model_score": sum(_answers(r)[0].score for r in guessed),
        "opponents": game.opponents,
        "ai_scores": [{"name": name, "score": sum(_answers(r)[position].score for r in guessed)}
                      for position, name in enumerate(game.opponents)],
        "nickname": game.nickname,
        "player_name": game.player_name,
        "challenge_url": reverse("game-challenge", args=[game.challenge_token]) if game.finished_at else None,
        "challenger": _challenger(game),
    }


def _challenger(game: Game) -> dict | None:
    source = game.challenge_of
    if source is None:
        return None
    score = source.rounds.aggregate(score=Sum("score"))["score"]
    ais = [{"name": row.model_name, "score": row.total or 0} for row in
           GameOpponent.objects.filter(game=source).annotate(total=Sum("answers__score")).order_by("position")]
    return {"name": source.player_name, "score": score or 0, "model_score": ais[0]["score"], "ais": ais,
            "round_scores": list(source.rounds.order_by("index").values_list("score", flat=True))}


def game_summary(game: Game) -> dict:
    """Totals, the count of rounds closer than the model, mean errors and the per-round table of a game."""
    rounds = rounds_with_answers(game)
    guessed = [r for r in rounds if r.is_guessed]
    n = len(guessed)
    state = game_state(game, rounds)
    state.update({
        "better_than_model": sum(1 for r in guessed if r.distance_km < _answers(r)[0].distance_km),
        "rounds_played": n,
        "mean_error_km": sum(r.distance_km for r in guessed) / n if n else None,
        "model_mean_error_km": sum(_answers(r)[0].distance_km for r in guessed) / n if n else None,
        "max_score": 5000 * len(rounds),
    })
    for position, ai in enumerate(state["ai_scores"]):
        errors = [_answers(r)[position].distance_km for r in guessed]
        ai["player_closer_rounds"] = sum(1 for r, km in zip(guessed, errors) if r.distance_km < km)
        ai["mean_error_km"] = sum(errors) / n if n else None
    # "You beat all the AIs" (or the one AI): a higher total than every opponent.
    state["beat_all_ais"] = bool(n) and all(state["score"] > ai["score"] for ai in state["ai_scores"])
    return state


def leaderboard(*, period: str = "all", limit: int = 20, now: dt.datetime | None = None) -> list[dict]:
    """Finished games by total score (ties: the earlier finish first), with the model's total on the same images."""
    games = Game.objects.filter(finished_at__isnull=False)
    if period == "today":
        now = now or timezone.now()
        start = now.astimezone(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        games = games.filter(finished_at__gte=start)
    elif period != "all":
        raise ValueError(f"unknown leaderboard period {period!r}")
    rows = list(games.select_related("user").annotate(total=Sum("rounds__score"))
                .order_by("-total", "finished_at")[:limit])
    # Each opponent's total on the listed games, and how many rounds the player was closer, in one query.
    ais: dict[int, list] = {}
    for row in (GameOpponent.objects.filter(game__in=[g.pk for g in rows])
                .annotate(total=Sum("answers__score"),
                          beaten=Count("answers", filter=Q(answers__distance_km__gt=F("answers__round__distance_km"))))
                .order_by("game_id", "position")):
        ais.setdefault(row.game_id, []).append(row)
    result = []
    for i, g in enumerate(rows):
        opponents = ais.get(g.pk, [])
        result.append({
            "rank": i + 1, "name": g.player_name, "score": g.total or 0,
            "model_score": (opponents[0].total or 0) if opponents else 0,
            "better_than_model": opponents[0].beaten if opponents else 0, "finished_at": g.finished_at,
            "opponent": opponents[0].model_name if opponents else "", "difficulty": g.difficulty,
            "opponents": [o.model_name for o in opponents],
            "ais": [{"name": o.model_name, "score": o.total or 0} for o in opponents],
            "challenge_url": reverse("game-challenge", args=[g.challenge_token])})
    return result


# --- the game-image explorer -----------------------------------------------------------------------------------

def game_image_points(*, user) -> list[dict]:
    """Game images for the explorer map: staff see all, players only the images they have guessed on; each with
    its position, scene (the most likely of indoor / natural / urban), whether it is active and every model's
    error in km."""
    queryset = GameImage.objects.all()
    if not user.is_staff:
        queryset = queryset.filter(rounds__game__user=user, rounds__guessed_at__isnull=False).distinct()
    rows = list(queryset.values("pk", "lat", "lon", "p_indoor", "p_natural", "p_urban", "active"))
    ids = [r["pk"] for r in rows]
    errors: dict[int, dict] = {}
    for guess in ModelGuess.objects.filter(image_id__in=ids).values("image_id", "model_name", "distance_km"):
        errors.setdefault(guess["image_id"], {})[guess["model_name"]] = round(guess["distance_km"], 1)
    # Every player's error on the image (all players', not only this user's: a median, never a position).
    people: dict[int, list[float]] = {}
    for image_id, km in Round.objects.filter(image_id__in=ids, guessed_at__isnull=False,
                                             distance_km__isnull=False).values_list("image_id", "distance_km"):
        people.setdefault(image_id, []).append(km)
    points = []
    for row in rows:
        scene = {"indoor": row["p_indoor"], "natural": row["p_natural"], "urban": row["p_urban"]}
        known = {k: v for k, v in scene.items() if v is not None}
        model_errors = errors.get(row["pk"], {})
        played = people.get(row["pk"], [])
        people_km = round(statistics.median(played), 1) if played else None
        points.append({"id": row["pk"], "lat": row["lat"], "lon": row["lon"], "active": row["active"],
                       "scene": max(known, key=known.get) if known else "unknown",
                       "errors_km": model_errors, "people_km": people_km, "people_rounds": len(played),
                       # Negative: people's median guess was closer than the model's answer.
                       "people_minus_model_km": {name: round(people_km - km, 1) for name, km in model_errors.items()}
                       if people_km is not None else {}})
    return points


# --- curation ---------------------------------------------------------------------------------------------------

def reference_model() -> str | None:
    """The model whose errors curation shows and difficulty uses: the first opponent players meet."""
    names = opponent_models()
    return names[0] if names else None


def _count(queryset) -> Coalesce:
    return Coalesce(Subquery(queryset.annotate(n=Count("id")).values("n")), Value(0))


def with_curation_stats(queryset: QuerySet[GameImage], *, model_name: str | None) -> QuerySet[GameImage]:
    """Game images annotated with how the reference model and the players fared, in one query (subqueries)."""
    guessed = Round.objects.filter(image=OuterRef("pk"), guessed_at__isnull=False).order_by().values("image")
    guesses = ModelGuess.objects.filter(image=OuterRef("pk")).order_by().values("image")
    reports = ImageReport.objects.filter(image=OuterRef("pk"), resolved=False).order_by().values("image")
    return queryset.annotate(
        rounds_played=_count(guessed),
        mean_player_km=Subquery(guessed.annotate(mean=Avg("distance_km")).values("mean")),
        # Rounds where the player was closer than the game's first AI opponent (whichever model it was).
        beat_model=_count(guessed.filter(answers__opponent__position=0,
                                         distance_km__lt=F("answers__distance_km"))),
        model_error_km=Subquery(ModelGuess.objects.filter(image=OuterRef("pk"), model_name=model_name or "")
                                .values("distance_km")[:1]),
        guess_count=_count(guesses),
        open_reports=_count(reports),
        scene=Case(
            When(Q(p_indoor__gte=F("p_natural")) & Q(p_indoor__gte=F("p_urban")), then=Value("indoor")),
            When(Q(p_natural__gte=F("p_urban")), then=Value("natural")),
            When(p_urban__isnull=False, then=Value("urban")),
            default=Value(""), output_field=CharField()),
    )
