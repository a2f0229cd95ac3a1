"""Per-IP rate limits on login and sign-up: over the limit a clear 429, never a server error."""
import pytest
from django.core.cache import cache
from django.urls import reverse


@pytest.fixture(autouse=True)
def _fresh_counters():
    cache.clear()
    yield
    cache.clear()


@pytest.mark.django_db
def test_login_attempts_over_the_limit_get_429_with_retry_after(client, settings, user):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login": (3, 300)}
    for _ in range(3):
        response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
        assert response.status_code == 200  # the form again, with its error
    response = client.post(reverse("login"), {"username": "alice", "password": "a-long-test-password-1"})
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert b"Too many login attempts" in response.content


@pytest.mark.django_db
def test_the_limit_is_per_address(client, settings, user):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login": (1, 300)}
    client.post(reverse("login"), {"username": "alice", "password": "wrong"}, REMOTE_ADDR="10.0.0.1")
    blocked = client.post(reverse("login"), {"username": "alice", "password": "wrong"}, REMOTE_ADDR="10.0.0.1")
    other = client.post(reverse("login"), {"username": "alice", "password": "a-long-test-password-1"},
                        REMOTE_ADDR="10.0.0.2")
    assert blocked.status_code == 429
    assert other.status_code == 302


@pytest.mark.django_db
def test_signup_over_the_limit_is_refused_and_creates_nobody(client, settings, django_user_model):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "signup": (1, 3600)}
    form = {"password1": "correct-horse-battery-9", "password2": "correct-horse-battery-9"}
    assert client.post(reverse("signup"), {"username": "u1", **form}).status_code == 302
    client.logout()
    response = client.post(reverse("signup"), {"username": "u2", **form})
    assert response.status_code == 429
    assert not django_user_model.objects.filter(username="u2").exists()


@pytest.mark.django_db
def test_reading_the_login_page_does_not_count(client, settings):
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, "login": (1, 300)}
    for _ in range(5):
        assert client.get(reverse("login")).status_code == 200


@pytest.mark.parametrize("start", [0.5, 20.0, 59.5])
def test_retry_after_is_the_first_second_a_new_event_is_let_through(monkeypatch, settings, start):
    """Whenever a burst lands in the window, a client that waits exactly Retry-After seconds gets in, one that
    comes a second earlier does not, and nobody is told to wait more than a window plus one event's share."""
    from core import ratelimit

    clock = {"now": 1_000_020.0 + start}  # 1,000,020 is a multiple of 60: `start` is the position in the window
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock["now"])
    rule = ratelimit.RateLimit(5, 60)
    key = f"test:retry:{start}"
    assert all(ratelimit.hit(key, rule).allowed for _ in range(5))
    refused = ratelimit.hit(key, rule)
    assert not refused.allowed and 0 < refused.retry_after_s <= 60 + 60 // 5
    began = clock["now"]
    clock["now"] = began + refused.retry_after_s - 1
    assert not ratelimit.hit(key, rule).allowed
    clock["now"] = began + refused.retry_after_s
    assert ratelimit.hit(key, rule).allowed
