"""Routes of play mode: pages, the play page's JSON API, and per-round photos."""
from django.urls import path

from games import views

urlpatterns = [
    path("", views.home, name="home"),
    path("leaderboard/", views.leaderboard, name="leaderboard"),
    path("credits/", views.credits, name="credits"),
    path("explore/game-images/", views.game_image_explorer, name="game-image-explorer"),
    path("play/start/", views.start, name="game-start"),
    path("play/<uuid:key>/", views.play, name="game-play"),
    path("play/challenge/<str:token>/", views.challenge, name="game-challenge"),
    path("play/photo/<str:token>/", views.photo, name="game-photo"),
    path("api/games/", views.api_start, name="game-api-start"),
    path("api/games/<uuid:key>/", views.api_state, name="game-api-state"),
    path("api/games/<uuid:key>/guess/", views.api_guess, name="game-api-guess"),
    path("api/games/<uuid:key>/next/", views.api_next, name="game-api-next"),
    path("api/games/<uuid:key>/summary/", views.api_summary, name="game-api-summary"),
    path("api/games/<uuid:key>/nickname/", views.api_nickname, name="game-api-nickname"),
    path("api/games/<uuid:key>/report/", views.api_report, name="game-api-report"),
]
