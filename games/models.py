"""Play mode data: curated game photos, the models' stored guesses on them, games and their rounds."""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from predictor.models import JobStatus


STARTER_PACK = "starter"


class LinkStatus(models.TextChoices):
    UNCHECKED = "unchecked", "Unchecked"
    ALIVE = "alive", "Alive"
    DEAD = "dead", "Dead"


class Difficulty(models.TextChoices):
    EASY = "easy", "Easy"
    MEDIUM = "medium", "Medium"
    HARD = "hard", "Hard"


class GameImage(models.Model):
    """A photo players can be asked to locate, with its true position, attribution and scene probabilities."""

    image = models.ImageField(upload_to="game_images/", blank=True,
                              help_text="Stored under MEDIA_ROOT/game_images/ with a content-hash name.")
    lat = models.FloatField()
    lon = models.FloatField()
    source_id = models.CharField(max_length=255, unique=True,
                                 help_text="The Im2GPS IMG_ID (encodes the Flickr photo id; never shown to players).")
    author = models.CharField(max_length=255, blank=True)
    title = models.CharField(max_length=255, blank=True, help_text="The photo's own title (shown after the guess).")
    date_taken = models.CharField(max_length=32, blank=True)
    licence_name = models.CharField(max_length=100, blank=True)
    licence_url = models.URLField(blank=True)
    source_url = models.URLField(blank=True)
    p_indoor = models.FloatField(null=True, blank=True)
    p_natural = models.FloatField(null=True, blank=True)
    p_urban = models.FloatField(null=True, blank=True)
    active = models.BooleanField(default=True)
    # Why a staff member published an image whose licence is not open; an image may be played only with one.
    activation_reason = models.TextField(blank=True)
    link_status = models.CharField(max_length=10, choices=LinkStatus.choices, default=LinkStatus.UNCHECKED)
    link_checked_at = models.DateTimeField(null=True, blank=True)
    link_check_detail = models.CharField(max_length=255, blank=True)
    # Set by games.difficulty.recompute_difficulty from the models' and the players' errors.
    difficulty = models.CharField(max_length=8, choices=Difficulty.choices, blank=True, db_index=True)
    difficulty_km = models.FloatField(null=True, blank=True)
    # Derived from licence_name by games.licences.is_open_licence wherever the name is written (import, admin).
    # Stored rather than generated: PostgreSQL refuses text comparisons in generated columns (indeterminate
    # collation), and the database must be able to filter on it.
    is_open_licence = models.BooleanField(default=False, editable=False)
    # The policy class of the licence (games.licences.licence_kind), derived from licence_name the same way; whether
    # "nc" is playable depends on GEOWEB_GAME_COMMERCIAL, read when images are drawn.
    licence_kind = models.CharField(max_length=8, default="unknown", editable=False, db_index=True)
    # "starter" for the photos of the starter pack shipped with the app (games/starter_pack/), blank otherwise.
    pack = models.CharField(max_length=20, blank=True, default="", db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["source_id"]
        indexes = [models.Index(fields=["active", "is_open_licence"], name="gameimage_playable")]

    def __str__(self) -> str:
        return self.source_id

    @property
    def attribution(self) -> str:
        return f"© {self.author}" if self.author else "© unknown author"


class ModelGuess(models.Model):
    """Where a geolocation model placed a game image (imported from a results file or computed by a bundle)."""

    image = models.ForeignKey(GameImage, on_delete=models.CASCADE, related_name="model_guesses")
    model_name = models.CharField(max_length=100)
    lat = models.FloatField()
    lon = models.FloatField()
    distance_km = models.FloatField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["image", "model_name"], name="one_guess_per_image_and_model")]
        indexes = [models.Index(fields=["model_name"], name="modelguess_model")]

    def __str__(self) -> str:
        return f"{self.model_name} on {self.image_id}"


class Game(models.Model):
    """One play-through of a fixed number of rounds against 1..N AI opponents (GameOpponent rows, in order), by a
    user or an anonymous session."""

    class Mode(models.TextChoices):
        CLASSIC = "classic", "Classic"
        CHALLENGE = "challenge", "Challenge"

    key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    challenge_token = models.CharField(max_length=32, unique=True, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="games")
    session_key = models.CharField(max_length=40, blank=True, db_index=True)
    nickname = models.CharField(max_length=30, blank=True)
    seed = models.BigIntegerField()
    mode = models.CharField(max_length=12, choices=Mode.choices, default=Mode.CLASSIC)
    challenge_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="challengers")
    # "easy", "hard" or "mixed" (any difficulty): which images the game was drawn from.
    difficulty = models.CharField(max_length=8, default="mixed")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["finished_at"], name="game_finished")]

    def __str__(self) -> str:
        return f"Game {self.key}"

    @property
    def opponents(self) -> list[str]:
        """The model names of this game's AI opponents in order (the first is the game's main opponent).

        Read once per instance (or from a `prefetch_related("opponent_rows")`): a game's opponents never change."""
        cached = self.__dict__.get("_opponents")
        if cached is None:
            cached = [row.model_name for row in self.opponent_rows.all()]
            self.__dict__["_opponents"] = cached
        return list(cached)

    @property
    def player_name(self) -> str:
        if self.user_id and not self.nickname:
            return self.user.username
        return self.nickname or "Anonymous"


class Round(models.Model):
    """One photo of a game: the player's guess, scored when the player guesses; each AI's answer to it is a
    RoundAnswer row stored at the same moment."""

    game = models.ForeignKey(Game, on_delete=models.CASCADE, related_name="rounds")
    index = models.PositiveSmallIntegerField()
    image = models.ForeignKey(GameImage, on_delete=models.PROTECT, related_name="rounds")
    photo_token = models.CharField(max_length=32, unique=True, editable=False)
    guess_lat = models.FloatField(null=True, blank=True)
    guess_lon = models.FloatField(null=True, blank=True)
    distance_km = models.FloatField(null=True, blank=True)
    score = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    guessed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["game", "index"]
        constraints = [models.UniqueConstraint(fields=["game", "index"], name="one_round_per_game_index")]

    def __str__(self) -> str:
        return f"Round {self.index + 1} of {self.game_id}"

    @property
    def is_guessed(self) -> bool:
        return self.guessed_at is not None

    @property
    def seconds_taken(self) -> float | None:
        if self.started_at is None or self.guessed_at is None:
            return None
        return (self.guessed_at - self.started_at).total_seconds()


class GameOpponent(models.Model):
    """One AI opponent of a game: `model_name` (a ModelGuess.model_name) at `position` 0, 1, … in the game's order.

    A game has 1..settings.GAME_MAX_OPPONENTS of them, written with the game and never changed. Position 0 is the
    game's main opponent (the `opponent` / `model_*` keys of the API are its). `answers` are its RoundAnswers.
    """

    game = models.ForeignKey(Game, on_delete=models.CASCADE, related_name="opponent_rows")
    position = models.PositiveSmallIntegerField()
    model_name = models.CharField(max_length=100)

    class Meta:
        ordering = ["game", "position"]
        constraints = [
            models.UniqueConstraint(fields=["game", "position"], name="one_opponent_per_game_position"),
            models.UniqueConstraint(fields=["game", "model_name"], name="one_opponent_per_game_model"),
        ]
        indexes = [models.Index(fields=["model_name"], name="gameopponent_model")]

    def __str__(self) -> str:
        return f"{self.model_name} in {self.game_id} (#{self.position + 1})"


class RoundAnswer(models.Model):
    """One AI's answer to one round: where `opponent` (the game's GameOpponent) placed the photo, its error and
    its points, scored like the player's.

    Copied from ModelGuess when the player guesses (one row per opponent of the game, all in one transaction), so
    a later re-import or recompute never changes a played game. Unguessed rounds have no answers.
    """

    round = models.ForeignKey(Round, on_delete=models.CASCADE, related_name="answers")
    opponent = models.ForeignKey(GameOpponent, on_delete=models.CASCADE, related_name="answers")
    lat = models.FloatField()
    lon = models.FloatField()
    distance_km = models.FloatField()
    score = models.PositiveIntegerField()

    class Meta:
        ordering = ["round", "opponent__position"]
        constraints = [models.UniqueConstraint(fields=["round", "opponent"], name="one_answer_per_round_opponent")]

    def __str__(self) -> str:
        return f"{self.opponent.model_name} on round {self.round_id}"

    @property
    def model_name(self) -> str:
        return self.opponent.model_name


class RecomputeJob(models.Model):
    """A background run of the active model over some game images, storing its guesses; progress is done/total.
    Its state follows the predictor.Job that runs it (the same statuses)."""

    Status = JobStatus

    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    model_name = models.CharField(max_length=100, blank=True)
    image_ids = models.JSONField(default=list)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, help_text="[source_id, reason] of the images that could not be run")
    message = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Recompute #{self.pk} ({self.done}/{self.total}, {self.status})"

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 100


class ImageReport(models.Model):
    """A player's report that a game image is wrong or unsuitable; staff review and resolve it."""

    class Reason(models.TextChoices):
        WRONG_LOCATION = "wrong_location", "The true location looks wrong"
        OFFENSIVE = "offensive", "Offensive or private content"
        BROKEN = "broken", "The photo does not load or is damaged"
        OTHER = "other", "Something else"

    image = models.ForeignKey(GameImage, on_delete=models.CASCADE, related_name="reports")
    round = models.OneToOneField(Round, null=True, blank=True, on_delete=models.SET_NULL, related_name="report")
    reason = models.CharField(max_length=20, choices=Reason.choices)
    comment = models.TextField(blank=True, max_length=1000)
    reporter = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    resolved = models.BooleanField(default=False)
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.TextField(blank=True)

    class Meta:
        ordering = ["resolved", "-created_at"]

    def __str__(self) -> str:
        return f"Report on {self.image_id}: {self.get_reason_display()}"
