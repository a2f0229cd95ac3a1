"""GeoWeb settings: one module, driven by environment variables with embedded defaults.

Embedded defaults (nothing set): SQLite, in-memory channel layer, local-memory cache, the inference worker inside
the web process, CPU unless a GPU is present. `DATABASE_URL` and `REDIS_URL` switch to PostgreSQL and Redis.

Order: helpers, paths and secrets; apps, middleware, URLs and templates; database; channel layer and caches;
accounts; static and media files; maps; the game; the predictor and its worker; uploads and their responsible use;
security headers and the Content Security Policy; rate limits; logging.
"""
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# Where the app keeps what it writes: uploads, game images, model bundles, the generated secret key.
DATA_DIR = Path(os.environ.get("GEOWEB_DATA_DIR", BASE_DIR / "var")).resolve()


def _secret_key() -> str:
    key = os.environ.get("GEOWEB_SECRET_KEY")
    if key:
        return key
    # Embedded default: a random key created once and kept beside the data, never a key in the source.
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("GEOWEB_DEBUG", False)
ALLOWED_HOSTS = env_list("GEOWEB_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("GEOWEB_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.humanize",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "core",
    "geoweb",
    "games",
    "predictor",
    "results",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Content Security Policy (django-csp; see CONTENT_SECURITY_POLICY below).
    "csp.middleware.CSPMiddleware",
    # Outside everything that may answer an /api/ request with an error page (CSRF, 404, 405, 413, 429).
    "games.api_errors.JsonApiErrorsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # While the database cannot be reached, requests get a 503 page that asks the client to retry (core/outage.py).
    "core.outage.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "geoweb.urls"
ASGI_APPLICATION = "geoweb.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "geoweb.context.map_settings",
            ],
        },
    },
]

# --- Database ---
# SQLite beside the data unless DATABASE_URL names another.
DATABASES = {"default": dj_database_url.config(default=f"sqlite:///{DATA_DIR / 'geoweb.sqlite3'}")}
# CONN_MAX_AGE: Django's advice under ASGI is 0 (persistent connections off) with the database's own pooling, because
# its stock handler runs each request on a new thread, so a kept connection would be left behind by every request.
# PostgreSQL follows that advice: 0, with the connection pool below. SQLite deviates, on purpose: here HTTP requests
# run on a fixed pool of long-lived threads (geoweb/http_handler.py, HTTP_THREADS), so each of those threads keeps one
# connection between requests and there are never more than HTTP_THREADS of them; reconnecting cost a game guess
# about 6 ms of 16 (SQLite prepares the schema and every statement again). With Django's stock handler
# (benchmarks/asgi_stock.py) set GEOWEB_DB_CONN_MAX_AGE=0.
HTTP_THREADS = env_int("GEOWEB_HTTP_THREADS", 32)
DATABASES["default"]["CONN_MAX_AGE"] = env_int(
    "GEOWEB_DB_CONN_MAX_AGE", 600 if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3" else 0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Tests run the app in a forked server process too, so the test database must be a file, not memory; one per
    # test process, so that concurrent test runs do not share it.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-geoweb-{os.getpid()}.sqlite3")}
    # WAL lets readers go on while one writer commits, synchronous=NORMAL drops the fsync of each commit (a power
    # cut may lose the last commits, never corrupt the file), and IMMEDIATE transactions take the write lock at
    # BEGIN, so concurrent writers queue instead of failing on a lock upgrade. Measured on the game API at 50
    # clients (benchmarks/RESULTS.md): guess throughput 24% -> 42% of a hello-world view, p99 9.3 s -> 1.2 s.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE",
                                       "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    _db_options = DATABASES["default"].setdefault("OPTIONS", {})
    # A dead or black-holed database must turn into a 503 within seconds, not hang a request for minutes.
    _db_options.setdefault("connect_timeout", env_int("GEOWEB_DB_CONNECT_TIMEOUT", 5))
    DB_POOL_MAX = env_int("GEOWEB_DB_POOL_MAX", 10)
    if DB_POOL_MAX > 0 and DATABASES["default"].get("CONN_MAX_AGE", 0) == 0:
        # Each thread that serves requests (HTTP_THREADS, plus the websocket consumers' database threads) has its
        # own connection, more than PostgreSQL's default limit of 100 across a few processes. A pool per process
        # bounds that; a request beyond it waits up to the timeout for a free connection.
        # reconnect_timeout: while PostgreSQL is away the pool retries a new connection with a doubling delay and
        # starts no other attempt meanwhile; left at psycopg_pool's 5 minutes, that delay grows to tens of seconds and
        # requests go on failing long after the database is back. Giving up after a few seconds lets the next
        # request start a fresh attempt at once, so service comes back within about two seconds of the database.
        _db_options["pool"] = {"min_size": 1, "max_size": DB_POOL_MAX,
                               "timeout": float(os.environ.get("GEOWEB_DB_POOL_TIMEOUT", "5")),
                               "reconnect_timeout": float(os.environ.get("GEOWEB_DB_POOL_RECONNECT_TIMEOUT", "5"))}
        # Pooled connections are checked before use, so one broken by a database restart is replaced, not used.
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "capacity": 200, "expiry": 30,
                       "prefix": os.environ.get("GEOWEB_CHANNEL_PREFIX", "geoweb")},
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL},
              # Rate-limit counters (core/ratelimit.py), shared by every web process.
              "ratelimit": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                            "KEY_PREFIX": "ratelimit"}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 200}}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
              # Rate-limit counters in files beside the data, so a restart does not reset them.
              "ratelimit": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                            "LOCATION": str(DATA_DIR / "ratelimit"), "OPTIONS": {"MAX_ENTRIES": 20_000}}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("GEOWEB_STATIC_ROOT", BASE_DIR / "staticfiles"))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on every request when it is missing
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the source folders when collectstatic has not run (development and tests).
WHITENOISE_USE_FINDERS = True
MEDIA_URL = "/media/"
MEDIA_ROOT = DATA_DIR / "media"

# --- Maps ---
# The tile server is a setting; the app draws its own Natural Earth basemap under it, so maps stay usable
# when no tile server can be reached.
MAP_TILE_URL = os.environ.get("GEOWEB_TILE_URL", "https://tile.openstreetmap.org/{z}/{x}/{y}.png")
MAP_TILE_ATTRIBUTION = os.environ.get(
    "GEOWEB_TILE_ATTRIBUTION", '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors'
)

# --- The game ---
GAME_ROUNDS = env_int("GEOWEB_GAME_ROUNDS", 5)
GAME_IMAGES_DIR = os.environ.get("GEOWEB_GAME_IMAGES", "")
IM2GPS_ZIP_URL = os.environ.get("GEOWEB_IM2GPS_ZIP_URL", "http://graphics.cs.cmu.edu/projects/im2gps/gps_query_imgs.zip")
# A commercial site may not show non-commercial (CC …-NC) photos without a staff reason (games/licences.py).
GAME_COMMERCIAL = env_bool("GEOWEB_GAME_COMMERCIAL", False)
# The starter pack shipped in games/starter_pack/: imported by `import_game_images` and played while on. "auto" (the
# default) is on unless GEOWEB_GAME_IMAGES names the operator's own images, so the two are never mixed silently.
GAME_STARTER_PACK = os.environ.get("GEOWEB_GAME_STARTER_PACK", "auto").strip().lower() or "auto"
GAME_OPPONENT_MODELS = env_list("GEOWEB_GAME_OPPONENTS", "")
# How many AI opponents one game may have (the home form offers this many choices; the API refuses more).
GAME_MAX_OPPONENTS = max(1, env_int("GEOWEB_GAME_MAX_OPPONENTS", 3))
# At most GAME_MAX_OPPONENTS AIs per game; ";"-separated, because ISN model names such as "ISNs(M, f*, S3)"
# contain commas.
GAME_DEFAULT_OPPONENTS = [name.strip() for name in os.environ.get("GEOWEB_GAME_DEFAULT_OPPONENTS", "").split(";")
                          if name.strip()]

# --- The predictor and its worker ---
MODEL_DIR = Path(os.environ.get("GEOWEB_MODEL_DIR", DATA_DIR / "models"))
# The paper's published per-image results (results_im2gps/ and results_im2gps3k/ of TIBHannover/GeoEstimation, with
# im2gps_places365.csv and im2gps3k_places365.csv): /models/ computes each published model's accuracy from them. Unset,
# ../shared/data/geoestimation beside the checkout is used when it is there; without the files /models/ shows the
# paper's own summary figures, labelled as such.
# /results/ starts a background recompute when its cached figures are older than this (seconds; 0: only
# `manage.py recompute_results` recomputes them).
RESULTS_REFRESH_S = env_int("GEOWEB_RESULTS_REFRESH_S", 900)
_SHARED_RESULTS = BASE_DIR.parent / "shared" / "data" / "geoestimation"
PUBLISHED_RESULTS_DIR = os.environ.get("GEOWEB_PUBLISHED_RESULTS", str(_SHARED_RESULTS) if _SHARED_RESULTS.is_dir()
                                       else "")
ACTIVE_MODEL = os.environ.get("GEOWEB_MODEL", "")
INFERENCE_DEVICE = os.environ.get("GEOWEB_DEVICE", "auto")
ENGINE_MAX_BATCH = env_int("GEOWEB_ENGINE_MAX_BATCH", 32)
ENGINE_MAX_WAIT_MS = env_int("GEOWEB_ENGINE_MAX_WAIT_MS", 10)
# torch.compile the networks for fixed batch buckets, warmed up when the engine loads (minutes on a GPU, then faster
# batches). Off by default until the H100 benchmark has measured it (benchmarks/RESULTS.md).
ENGINE_COMPILE = env_bool("GEOWEB_ENGINE_COMPILE", False)
EMBEDDED_WORKER = env_bool("GEOWEB_EMBEDDED_WORKER", not REDIS_URL)
WORKER_HEARTBEAT_TIMEOUT_S = env_int("GEOWEB_WORKER_HEARTBEAT_TIMEOUT", 60)

# --- Uploads ---
UPLOAD_MAX_BYTES = env_int("GEOWEB_UPLOAD_MAX_BYTES", 20 * 1024 * 1024)
UPLOAD_MAX_PIXELS = env_int("GEOWEB_UPLOAD_MAX_PIXELS", 40_000_000)
# Longer side : shorter side beyond which a photo is refused at the door (panoramas up to 10:1 pass).
UPLOAD_MAX_ASPECT_RATIO = float(os.environ.get("GEOWEB_UPLOAD_MAX_ASPECT", "10"))
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

# --- Upload analysis (predictor/services.py, predictor/worker.py) ---
# Kill switch: with uploads off, /analyze/ explains that analysis is paused and accepts nothing.
UPLOADS_ENABLED = env_bool("GEOWEB_UPLOADS_ENABLED", True)
UPLOAD_DAILY_QUOTA = env_int("GEOWEB_UPLOAD_DAILY_QUOTA", 50)  # analyses per user per 24 h; 0 = no limit
WORKER_BATCH = env_int("GEOWEB_WORKER_BATCH", 32)  # analyses claimed at once
WORKER_POLL_S = float(os.environ.get("GEOWEB_WORKER_POLL_S", "2"))
WORKER_MAX_ATTEMPTS = env_int("GEOWEB_WORKER_MAX_ATTEMPTS", 3)  # re-queues after a dead worker before giving up
# Address-space cap (RLIMIT_AS) of a CPU worker process, embedded child or `run_worker`; 0 = none. The default leaves
# most of a 24 GB machine to the web server and the system: see docs/upload.md for what a worker needs.
WORKER_MEMORY_LIMIT_MB = env_int("GEOWEB_WORKER_MEMORY_LIMIT_MB", 10240)
# Activation maps stored per analysis for clicked cells: the top N cells of each partitioning the user may see.
UPLOAD_CELL_CAMS = env_int("GEOWEB_UPLOAD_CELL_CAMS", 5)

# --- Responsible use of uploads (predictor/policy.py, docs/responsible-use.md) ---
# How precise an upload's answer may be: "country", "region" (coarse cells, country/region names) or "fine".
UPLOAD_GRANULARITY = os.environ.get("GEOWEB_UPLOAD_GRANULARITY", "region").strip().lower()
if UPLOAD_GRANULARITY not in ("country", "region", "fine"):
    raise ImproperlyConfigured("GEOWEB_UPLOAD_GRANULARITY must be country, region or fine")
# Photos a Search-within-Cell model judges not localizable (prediction density below its conf_thres): answered at
# "country" or "region" level (with the reason on the page), not at all ("withhold": no location, the reason on the
# page), or "answer"ed like any other photo.
UPLOAD_NON_LOCALIZABLE = os.environ.get("GEOWEB_UPLOAD_NON_LOCALIZABLE", "country").strip().lower()
if UPLOAD_NON_LOCALIZABLE not in ("country", "region", "withhold", "answer"):
    raise ImproperlyConfigured("GEOWEB_UPLOAD_NON_LOCALIZABLE must be country, region, withhold or answer")
UPLOAD_STAFF_FINE = env_bool("GEOWEB_UPLOAD_STAFF_FINE", False)  # staff see fine results of their own uploads
UPLOAD_COARSEN_INDOOR = env_bool("GEOWEB_UPLOAD_COARSEN_INDOOR", True)  # indoor scenes: country level only
UPLOAD_FACE_DETECTION = env_bool("GEOWEB_UPLOAD_FACE_DETECTION", True)  # faces found: country level only
TERMS_VERSION = os.environ.get("GEOWEB_TERMS_VERSION", "2026-11")  # a new version asks everyone to accept again
ABUSE_REPORT_EMAIL = os.environ.get("GEOWEB_ABUSE_EMAIL", "abuse@localhost")

# --- Security headers ---
# These hold in every mode; the production-only ones switch on with GEOWEB_PRODUCTION.
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if env_bool("GEOWEB_PRODUCTION", False):
    SECURE_SSL_REDIRECT = env_bool("GEOWEB_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("GEOWEB_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
# The admin's URL prefix: a deployment may move it off the well-known /admin/.
ADMIN_PATH = os.environ.get("GEOWEB_ADMIN_PATH", "admin/").strip("/") + "/"

# --- Content Security Policy (django-csp 4.0) ---
# Django 6's built-in CSP needs Python 3.12; this project runs on 3.11, so the django-csp package sends the header.
# Only this site's own scripts, styles and connections (websockets included), plus images from the tile server.


def _tile_source(url: str) -> list[str]:
    parts = urlsplit(url.replace("{s}.", "SUB.")) if url else None
    if not parts or not parts.scheme or not parts.netloc:
        return []
    host = parts.netloc.replace("SUB.", "*.")
    return [f"{parts.scheme}://{host}"]


CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:", *_tile_source(MAP_TILE_URL)],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# --- Rate limits (core/ratelimit.py): (events, window seconds) per client IP or per user ---
RATE_LIMITS = {
    "login": (env_int("GEOWEB_RATE_LOGIN", 20), 300),
    "signup": (env_int("GEOWEB_RATE_SIGNUP", 10), 3600),
    "upload": (env_int("GEOWEB_RATE_UPLOAD_IP", 30), 3600),
    "websocket": (env_int("GEOWEB_RATE_WEBSOCKET", 120), 60),
    # New games per client IP and, separately, per session (home form and POST /api/games/).
    "game_start": (env_int("GEOWEB_RATE_GAME_START", 20), 60),
}
RATE_LIMIT_TRUST_FORWARDED = env_bool("GEOWEB_TRUST_X_FORWARDED_FOR", False)
RATE_LIMIT_CACHE = "ratelimit"  # the CACHES alias that holds the counters

# --- Outages (core/outage.py, geoweb/health.py) ---
# While the database cannot be reached, requests get a 503 page that asks the client to retry after this long.
OUTAGE_RETRY_AFTER_S = env_int("GEOWEB_RETRY_AFTER", 10)
HEALTHZ_TIMEOUT_S = float(os.environ.get("GEOWEB_HEALTHZ_TIMEOUT", "3"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("GEOWEB_LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
