"""Write side of play mode: start a game, record guesses (server-authoritative), move on, finish, name the player.

The server owns the game: the true position and the model's guess of a round are read only when the player's guess
is stored, rounds are played strictly in order, and a round takes one guess.
"""
from __future__ import annotations

import datetime as dt
import random
import secrets

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from games import scoring, selectors
from games.models import Game, GameOpponent, ModelGuess, Round, RoundAnswer


class GameError(Exception):
    """A request the rules of the game refuse; `status` is the HTTP status a view should answer with."""

    status = 400

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class NoPlayableImages(GameError):
    status = 503


class RoundOutOfOrder(GameError):
    status = 409


class AlreadyGuessed(GameError):
    status = 409


class GameFinished(GameError):
    status = 409


class InvalidGuess(GameError):
    status = 400


def _new_token() -> str:
    return secrets.token_urlsafe(16)


GAME_DIFFICULTIES = ("easy", "mixed", "hard")


def max_opponents() -> int:
    """How many AI opponents one game may have: settings.GAME_MAX_OPPONENTS."""
    return settings.GAME_MAX_OPPONENTS


def _requested_opponents(opponent_model, opponents) -> list[str]:
    """The opponent names a caller asked for: `opponent_model` first, then `opponents` (a list of names, or one
    name; never split on commas, which model names such as "ISNs(M, f*, S3)" contain)."""
    if isinstance(opponents, str):
        opponents = [opponents]
    if opponents is not None and not isinstance(opponents, (list, tuple)):
        raise GameError("`opponents` must be a list of model names")
    requested = ([opponent_model] if opponent_model else []) + list(opponents or [])
    if not all(isinstance(name, str) for name in requested):
        raise GameError("`opponents` must be a list of model names")
    requested = [name.strip() for name in requested if name.strip()]  # a form's empty choices ask for nothing
    if len(requested) > max_opponents():
        raise GameError(f"a game has at most {max_opponents()} AI opponents, not {len(requested)}")
    names = []
    for name in requested:
        if name in names:
            raise GameError(f"{name!r} is named twice: choose different AI opponents")
        names.append(name)
    return names


def start_game(*, user=None, session_key: str = "", opponent_model: str | None = None, seed: int | None = None,
               challenge_token: str | None = None, difficulty: str = "mixed", opponents=None) -> Game:
    """A new game of `settings.GAME_ROUNDS` rounds; a challenge replays another game's images in the same order.

    The game is played against 1..settings.GAME_MAX_OPPONENTS AI opponents, in order: `opponent_model` and/or
    `opponents` name them (each must have stored guesses, see selectors.choosable_opponents); without either,
    selectors.default_opponents() is used. A challenge keeps the source game's opponents.

    `difficulty` "easy" or "hard" draws only images rated so (see games.difficulty); "mixed" draws from all.
    """
    if difficulty not in GAME_DIFFICULTIES:
        raise GameError(f"unknown difficulty {difficulty!r}; choose one of {', '.join(GAME_DIFFICULTIES)}")
    is_player = user is not None and user.is_authenticated
    if not is_player and not session_key:
        raise GameError("an anonymous game needs a session")
    source = None
    if challenge_token:
        try:
            source = selectors.game_by_challenge(token=challenge_token)
        except selectors.GameNotFound:
            raise GameError("this challenge link is not valid (the game does not exist or is not finished)") from None
        names = source.opponents
        difficulty = source.difficulty
        images = [r.image for r in source.rounds.select_related("image").order_by("index")]
        seed = source.seed
    else:
        available = selectors.choosable_opponents()
        if not available:
            raise NoPlayableImages(
                "No game images with a model's guess are installed. Run `manage.py import_im2gps --meta META.csv "
                "--images DIR|ZIP --predictions FILE`, or set GEOWEB_GAME_IMAGES and run `manage.py "
                "import_game_images`.")
        names = _requested_opponents(opponent_model, opponents) or selectors.default_opponents()
        for name in names:
            if name not in available:
                raise GameError(f"unknown opponent {name!r}; choose from {', '.join(available)}")
        seed = seed if seed is not None else secrets.randbits(62)
        images = _choose_images(model_names=names, seed=seed, count=settings.GAME_ROUNDS, difficulty=difficulty)
    now = timezone.now()
    # Reads above, writes only in here: on SQLite a transaction that starts with a write takes the write lock
    # at once (and waits for it), instead of failing when a read transaction tries to upgrade.
    with transaction.atomic():
        game = Game.objects.create(
            user=user if is_player else None, session_key="" if is_player else session_key, seed=seed,
            mode=Game.Mode.CHALLENGE if source else Game.Mode.CLASSIC, challenge_of=source,
            challenge_token=_new_token(), difficulty=difficulty)
        GameOpponent.objects.bulk_create([GameOpponent(game=game, position=position, model_name=name)
                                          for position, name in enumerate(names)])
        game.__dict__["_opponents"] = list(names)
        Round.objects.bulk_create([
            Round(game=game, index=i, image=image, photo_token=_new_token(), started_at=now if i == 0 else None)
            for i, image in enumerate(images)])
    return game


def _choose_images(*, model_names: list[str], seed: int, count: int, difficulty: str = "mixed") -> list:
    """`count` images playable against every one of `model_names`, drawn with `seed`; missing files are skipped."""
    model_name = " and ".join(model_names)
    candidates = list(selectors.playable_images(model_name=model_names, difficulty=difficulty).order_by("id"))
    rng = random.Random(seed)
    rng.shuffle(candidates)
    chosen = []
    for image in candidates:
        if image.image.storage.exists(image.image.name):
            chosen.append(image)
            if len(chosen) == count:
                return chosen
    if difficulty != "mixed":
        raise NoPlayableImages(
            f"A {difficulty} game needs {count} playable images rated {difficulty} against {model_name}, and only "
            f"{len(chosen)} are available. Choose a mixed game, or rate more images (`manage.py "
            "recompute_difficulty`).")
    state = selectors.playability()
    why = "; ".join(f"{n} {reason}" for n, reason in state["reasons"])
    raise NoPlayableImages(
        f"A game needs {count} playable images against {model_name}, and only {len(chosen)} are available"
        + (f" ({state['total']} installed: {why})." if state["total"] else
           ": none are installed. Import them with `manage.py import_game_images` or `manage.py import_im2gps`."))


def submit_guess(*, game: Game, round_index: int, lat: float, lon: float,
                 now: dt.datetime | None = None) -> Round:
    """Store the player's guess for the current round and score it against the truth and the model.

    Rounds are numbered from 0, as in the API, and so are they in every message."""
    if not scoring.valid_coordinate(lat, lon):
        raise InvalidGuess("a guess needs a latitude in [-90, 90] and a longitude in [-180, 180]")
    if game.finished_at is not None:
        raise GameFinished("this game is finished")
    # The game's rounds with their photos in one plain query (five rows): the current round and the last index come
    # from it. Simple queries here, not one annotated with subqueries: building that one cost more CPU than running it.
    rounds = list(Round.objects.select_related("image").filter(game=game).order_by("index"))
    round_ = next((r for r in rounds if r.guessed_at is None), None)
    if round_ is None:
        raise GameFinished("every round of this game has been guessed")
    if round_index != round_.index:
        if 0 <= round_index < round_.index:
            raise AlreadyGuessed(f"round {round_index} has already been guessed")
        if not 0 <= round_index <= rounds[-1].index:
            raise InvalidGuess(f"this game has rounds 0 to {rounds[-1].index}, not {round_index}")
        raise RoundOutOfOrder(f"round {round_index} is not the current round ({round_.index})")
    if round_.started_at is None:
        raise RoundOutOfOrder(f"round {round_index} has not been shown yet")
    opponents = list(GameOpponent.objects.filter(game=game).order_by("position"))
    names = [opponent.model_name for opponent in opponents]
    stored = {name: (lat, lon) for name, lat, lon in ModelGuess.objects.filter(
        image_id=round_.image_id, model_name__in=names).values_list("model_name", "lat", "lon")}
    for name in names:
        if name not in stored:
            raise GameError(f"the model {name} has no stored guess for this photo any more")
    image = round_.image
    now = now or timezone.now()
    round_.guess_lat, round_.guess_lon = float(lat), float(lon)
    round_.distance_km = scoring.error_km(true_lat=image.lat, true_lon=image.lon, lat=lat, lon=lon)
    round_.score = scoring.score(round_.distance_km)
    answers = []
    for opponent in opponents:  # every AI is scored the same way as the player
        ai_lat, ai_lon = stored[opponent.model_name]
        km = scoring.error_km(true_lat=image.lat, true_lon=image.lon, lat=ai_lat, lon=ai_lon)
        answers.append(RoundAnswer(round=round_, opponent=opponent, lat=ai_lat, lon=ai_lon, distance_km=km,
                                   score=scoring.score(km)))
    round_.guessed_at = now
    last = round_.index == rounds[-1].index
    with transaction.atomic():
        # The conditional update is the guard against two guesses racing for the same round.
        updated = Round.objects.filter(pk=round_.pk, guessed_at__isnull=True).update(
            guess_lat=round_.guess_lat, guess_lon=round_.guess_lon, distance_km=round_.distance_km,
            score=round_.score, guessed_at=now)
        if not updated:
            raise AlreadyGuessed(f"round {round_index} has already been guessed")
        RoundAnswer.objects.bulk_create(answers)
        if last:
            game.finished_at = now
            Game.objects.filter(pk=game.pk, finished_at__isnull=True).update(finished_at=now)
    # The reveal reads the answers from the round (as a prefetch would hold them), in the game's order.
    round_._prefetched_objects_cache = {"answers": answers}
    return round_


def start_next_round(*, game: Game, now: dt.datetime | None = None) -> Round:
    """Show the next round once the current one is guessed; calling it again returns the same round."""
    if game.finished_at is not None:
        raise GameFinished("this game is finished")
    round_ = Round.objects.filter(game=game, guessed_at__isnull=True).order_by("index").first()
    if round_ is None:
        raise GameFinished("every round of this game has been guessed")
    if round_.started_at is None:
        round_.started_at = now or timezone.now()
        Round.objects.filter(pk=round_.pk, started_at__isnull=True).update(started_at=round_.started_at)
    return round_


def finish_game(*, game: Game, now: dt.datetime | None = None) -> Game:
    """Mark a game finished once every round has a guess."""
    if game.finished_at is not None:
        return game
    if Round.objects.filter(game=game, guessed_at__isnull=True).exists():
        raise GameError("a game can only finish when every round has been guessed")
    game.finished_at = now or timezone.now()
    Game.objects.filter(pk=game.pk, finished_at__isnull=True).update(finished_at=game.finished_at)
    return game


def set_nickname(*, game: Game, nickname: str) -> Game:
    """The name shown on the leaderboard: 1 to 30 printable characters."""
    nickname = " ".join(str(nickname or "").split())
    if not nickname:
        raise GameError("a nickname cannot be empty")
    if len(nickname) > 30:
        raise GameError("a nickname has at most 30 characters")
    if not nickname.isprintable():
        raise GameError("a nickname cannot contain control characters")
    game.nickname = nickname
    game.save(update_fields=["nickname"])
    return game
