"""Curation of play mode: switch game images on and off, check licences and the models' stored guesses."""
from django.contrib import admin
from django.db import models
from django.db.models import Count

from games.licences import is_open_licence
from games.models import Game, GameImage, ModelGuess, Round


class ModelGuessInline(admin.TabularInline):
    model = ModelGuess
    extra = 0
    fields = ["model_name", "lat", "lon", "distance_km"]


@admin.register(GameImage)
class GameImageAdmin(admin.ModelAdmin):
    list_display = ["source_id", "author", "licence_name", "is_open_licence", "active", "guess_count", "updated_at"]
    list_filter = ["active", "is_open_licence", "licence_name"]
    search_fields = ["source_id", "author"]
    readonly_fields = ["is_open_licence", "created_at", "updated_at"]
    inlines = [ModelGuessInline]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    actions = ["activate", "deactivate"]

    def save_model(self, request, obj, form, change):
        obj.is_open_licence = is_open_licence(obj.licence_name)
        super().save_model(request, obj, form, change)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(guesses=Count("model_guesses"))

    @admin.display(description="model guesses", ordering="guesses")
    def guess_count(self, obj):
        return obj.guesses

    @admin.action(description="Make playable (active)")
    def activate(self, request, queryset):
        self.message_user(request, f"{queryset.update(active=True)} image(s) activated.")

    @admin.action(description="Withdraw from play (inactive)")
    def deactivate(self, request, queryset):
        self.message_user(request, f"{queryset.update(active=False)} image(s) withdrawn.")


class RoundInline(admin.TabularInline):
    model = Round
    extra = 0
    can_delete = False
    fields = ["index", "image", "distance_km", "score", "model_distance_km", "model_score", "started_at", "guessed_at"]
    readonly_fields = fields


@admin.register(Game)
class GameAdmin(admin.ModelAdmin):
    list_display = ["key", "player_name", "mode", "opponent_model", "created_at", "finished_at"]
    list_filter = ["mode", "opponent_model"]
    search_fields = ["nickname", "user__username"]
    readonly_fields = ["key", "challenge_token", "user", "session_key", "seed", "mode", "challenge_of",
                       "opponent_model", "created_at", "finished_at"]
    inlines = [RoundInline]
