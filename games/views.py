"""Play mode over HTTP: the pages, the small JSON API the play page calls, and per-round photo delivery."""
from __future__ import annotations

import json

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import RequestDataTooBig
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from core import ratelimit
from games import curation, selectors, services
from games.models import ImageReport


def _session_key(request, *, create: bool = False) -> str | None:
    if create and not request.session.session_key:
        request.session.save()
    return request.session.session_key


def _player_game(request, key):
    try:
        return selectors.game_for_player(key=key, user=request.user, session_key=_session_key(request))
    except selectors.GameNotFound:
        raise Http404("No such game for this player") from None


def _json_body(request) -> dict:
    try:
        data = json.loads(request.body or b"{}")
    except RequestDataTooBig:
        raise services.GameError("the request body is too large", status=413) from None
    except (ValueError, UnicodeDecodeError):
        raise services.GameError("the request body must be JSON") from None
    if not isinstance(data, dict):
        raise services.GameError("the request body must be a JSON object")
    return data


def _error(error: services.GameError) -> JsonResponse:
    return JsonResponse({"error": error.message}, status=error.status)


def _json_int(data: dict, key: str) -> int:
    """A JSON integer (not 1.9, "0" or true), as the API's `round` must be."""
    value = data.get(key)
    if type(value) is not int:  # bool is an int subclass, and is refused too
        raise services.InvalidGuess(f"`{key}` must be a JSON integer (0 for the first photo), not {value!r}"[:200])
    return value


def _json_number(data: dict, key: str) -> float:
    value = data.get(key)
    if type(value) not in (int, float):
        raise services.InvalidGuess(f"`{key}` must be a JSON number, not {value!r}"[:200])
    return float(value)


def _start_allowed(request) -> ratelimit.Verdict:
    """Game starts count per client IP and per session (settings.RATE_LIMITS["game_start"])."""
    rule = ratelimit.rule_for("game_start")
    verdict = ratelimit.hit(f"game_start:ip:{ratelimit.client_ip(request)}", rule)
    session_key = _session_key(request, create=True)  # the first start of a session counts too
    if verdict.allowed:
        verdict = ratelimit.hit(f"game_start:session:{session_key}", rule)
    return verdict


def _start(request, data: dict):
    return services.start_game(user=request.user, session_key=_session_key(request, create=True),
                               opponent_model=data.get("opponent") or None, opponents=data.get("opponents"),
                               challenge_token=data.get("challenge") or None,
                               difficulty=data.get("difficulty") or "mixed")


# --- pages ------------------------------------------------------------------------------------------------------

_ORDINALS = ("First", "Second", "Third", "Fourth", "Fifth", "Sixth")


def _extra_opponent_fields(defaults: list[str]) -> list[dict]:
    """The home form's optional AI choices after the first: `opponent2` … `opponent<GAME_MAX_OPPONENTS>`."""
    return [{"field": f"opponent{i + 1}",
             "label": f"{_ORDINALS[i] if i < len(_ORDINALS) else f'AI {i + 1}'} AI (optional)",
             "default": defaults[i] if i < len(defaults) else ""}
            for i in range(1, settings.GAME_MAX_OPPONENTS)]


def _home_context(**extra) -> dict:
    playability = selectors.playability()
    defaults = selectors.default_opponents()
    return {"opponents": selectors.choosable_opponents(), "defaults": defaults,
            "extra_opponents": _extra_opponent_fields(defaults),
            "playable": playability["playable"], "playability": playability, "rounds": settings.GAME_ROUNDS,
            "top": selectors.leaderboard(period="all", limit=5), **extra}


@require_GET
def home(request):
    return render(request, "games/home.html", _home_context())


@require_GET
def credits(request):
    """Who took the photos the game shows, under which licence, with a link to each photo's page. No photo and no
    position is shown here, so the list cannot be used to look a round up."""
    return render(request, "games/credits.html", {"credits": selectors.credits()})


@login_required
@require_GET
def game_image_explorer(request):
    """The game images on a map with each model's error: staff see all, players the images they have guessed."""
    return render(request, "games/game_images.html", {"points": selectors.game_image_points(user=request.user)})


@require_POST
def start(request):
    """The home page's form: start a game and open it (works without JavaScript up to the play page)."""
    verdict = _start_allowed(request)
    if not verdict.allowed:
        return ratelimit.too_many_requests(request, verdict, "new games")
    try:
        game = _start(request, {"opponent": request.POST.get("opponent"), "challenge": request.POST.get("challenge"),
                                "opponents": [request.POST.get(f"opponent{i + 1}") or ""
                                              for i in range(1, settings.GAME_MAX_OPPONENTS)],
                                "difficulty": request.POST.get("difficulty")})
    except services.GameError as error:
        return render(request, "games/home.html", _home_context(error=error.message), status=error.status)
    return redirect("game-play", key=game.key)


@require_GET
@never_cache
def play(request, key):
    game = _player_game(request, key)
    return render(request, "games/play.html", {"game": game, "report_reasons": ImageReport.Reason.choices})


@require_GET
def challenge(request, token):
    try:
        source = selectors.game_by_challenge(token=token)
    except selectors.GameNotFound:
        raise Http404("This challenge link is not valid") from None
    return render(request, "games/challenge.html", {"source": source, "summary": selectors.game_summary(source),
                                                    "token": token})


@require_GET
def leaderboard(request):
    period = "today" if request.GET.get("period") == "today" else "all"
    return render(request, "games/leaderboard.html", {
        "period": period, "rows": selectors.leaderboard(period=period, limit=50)})


@require_GET
def photo(request, token):
    """A round's photo by its opaque token, only for the player of that round and only once it has been shown."""
    try:
        round_ = selectors.photo_round(token=token, user=request.user, session_key=_session_key(request))
    except selectors.GameNotFound:
        raise Http404("No such photo") from None
    field = round_.image.image
    try:
        handle = field.open("rb")
    except (FileNotFoundError, ValueError, OSError):
        return HttpResponse("This photo is missing on the server.", status=404, content_type="text/plain")
    response = FileResponse(handle, content_type=_content_type(field.name))
    response["Cache-Control"] = "private, max-age=3600"
    return response


def _content_type(name: str) -> str:
    return {"png": "image/png", "webp": "image/webp"}.get(name.rsplit(".", 1)[-1].lower(), "image/jpeg")


# --- JSON API ---------------------------------------------------------------------------------------------------

@require_POST
def api_start(request):
    verdict = _start_allowed(request)
    if not verdict.allowed:
        return ratelimit.too_many_requests(request, verdict, "new games")
    try:
        game = _start(request, _json_body(request))
    except services.GameError as error:
        return _error(error)
    state = selectors.game_state(game)
    state["play_url"] = reverse("game-play", args=[game.key])
    return JsonResponse(state, status=201)


@require_GET
@never_cache
def api_state(request, key):
    return JsonResponse(selectors.game_state(_player_game(request, key)))


@require_POST
def api_guess(request, key):
    game = _player_game(request, key)
    try:
        data = _json_body(request)
        index, lat, lon = _json_int(data, "round"), _json_number(data, "lat"), _json_number(data, "lon")
        round_ = services.submit_guess(game=game, round_index=index, lat=lat, lon=lon)
    except services.GameError as error:
        return _error(error)
    return JsonResponse({"round": selectors.round_reveal(round_), "finished": game.finished_at is not None})


@require_POST
def api_next(request, key):
    game = _player_game(request, key)
    try:
        round_ = services.start_next_round(game=game)
    except services.GameError as error:
        return _error(error)
    return JsonResponse({"round": selectors.round_public(round_), "rounds_total": game.rounds.count()})


@require_GET
@never_cache
def api_summary(request, key):
    game = _player_game(request, key)
    if game.finished_at is None:
        return JsonResponse({"error": "the game is not finished yet"}, status=409)
    return JsonResponse(selectors.game_summary(game))


@require_POST
def api_nickname(request, key):
    game = _player_game(request, key)
    try:
        services.set_nickname(game=game, nickname=_json_body(request).get("nickname", ""))
    except services.GameError as error:
        return _error(error)
    return JsonResponse({"nickname": game.nickname, "player_name": game.player_name})


@require_POST
def api_report(request, key):
    """A player reports the photo of a round they have guessed; it lands in the admin's review queue."""
    game = _player_game(request, key)
    try:
        data = _json_body(request)
        index = _json_int(data, "round")
        round_ = game.rounds.filter(index=index).first()
        if round_ is None:
            raise services.GameError(f"this game has no round {index} (rounds are numbered from 0)")
        try:
            curation.report_image(round_=round_, reason=str(data.get("reason", "")),
                                  comment=str(data.get("comment", "")), user=request.user)
        except curation.CurationError as error:
            raise services.GameError(str(error)) from None
    except services.GameError as error:
        return _error(error)
    return JsonResponse({"reported": True, "round": index}, status=201)
