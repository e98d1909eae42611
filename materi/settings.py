"""Django settings for Materi Realtime.

Every value that comes from the environment is read here and nowhere else. The
embedded default needs no services: SQLite in the project folder and the in-memory
channel layer. Setting DATABASE_URL and REDIS_URL selects PostgreSQL and Redis.
"""

from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from materi.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", False)

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Set it to a long random string, or set "
            "DJANGO_DEBUG=true for local development only."
        )
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list(
    "DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "channels",
    "collab",
    "presence",
    "comments",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "materi.urls"
ASGI_APPLICATION = "materi.asgi.application"
WSGI_APPLICATION = None

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
            ],
        },
    },
]

# Databases

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
try:
    _database = dj_database_url.parse(DATABASE_URL)
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is invalid: {exc}") from None

if _database["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the one writer. IMMEDIATE transactions take the
    # write lock at BEGIN, so two consumers never both read and then fail to
    # upgrade ("database is locked"). The timeout waits for the lock instead.
    _database["OPTIONS"] = {
        "timeout": env_float("MATERI_SQLITE_TIMEOUT", 20.0),
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    # No CONN_HEALTH_CHECKS: Channels closes stale connections around every
    # database call, so a health check would add a round trip to each of them.
    # A connection broken by a database restart fails one call and is replaced.
    _database["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60)
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Channel layer and cache

REDIS_URL = env_str("REDIS_URL")
# "core" is channels-redis's list-based layer, "pubsub" its Redis Pub/Sub layer;
# docs/deployment.md compares them.
CHANNEL_LAYER_KIND = env_str("MATERI_CHANNEL_LAYER", "core")
if CHANNEL_LAYER_KIND not in ("core", "pubsub"):
    raise ImproperlyConfigured(
        f"MATERI_CHANNEL_LAYER={CHANNEL_LAYER_KIND!r} is not supported; "
        "use core or pubsub"
    )
if REDIS_URL and CHANNEL_LAYER_KIND == "pubsub":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
elif REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "capacity": env_int("MATERI_CHANNEL_CAPACITY", 1000, minimum=10),
                "expiry": 30,
            },
        }
    }
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
        }
    }
else:
    if not DEBUG:
        raise ImproperlyConfigured(
            "REDIS_URL is not set, so the in-memory channel layer would be used, and "
            "it cannot reach other server processes. Set REDIS_URL in production, or "
            "set DJANGO_DEBUG=true for a single development process."
        )
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {
                "capacity": env_int("MATERI_CHANNEL_CAPACITY", 1000, minimum=10)
            },
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Authentication

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "document-list"
LOGOUT_REDIRECT_URL = "login"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(
        seconds=env_int("MATERI_ACCESS_TOKEN_SECONDS", 900, minimum=1)
    ),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=1),
    "SIGNING_KEY": SECRET_KEY,
}

# Internationalization and static files

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# WhiteNoise serves the files straight from STATICFILES_DIRS, so no collectstatic
# step is needed; the static set is a few small files.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# The product's own knobs

MATERI = {
    # Largest WebSocket message accepted; a larger one closes the socket with 1009.
    "MAX_MESSAGE_BYTES": env_int("MATERI_MAX_MESSAGE_BYTES", 1024 * 1024, minimum=1024),
    # Most code points one operation may insert.
    "MAX_INSERT_LENGTH": env_int("MATERI_MAX_INSERT_LENGTH", 100_000, minimum=1),
    # Most operations sent in a catch_up; a client further behind gets a snapshot.
    "CATCH_UP_MAX_OPERATIONS": env_int(
        "MATERI_CATCH_UP_MAX_OPERATIONS", 1000, minimum=1
    ),
    # Seconds without any client message before the server closes the socket.
    "HEARTBEAT_TIMEOUT": env_float("MATERI_HEARTBEAT_TIMEOUT", 45.0, minimum=1.0),
    # Attempts at committing one edit when concurrent commits win the race.
    "COMMIT_ATTEMPTS": env_int("MATERI_COMMIT_ATTEMPTS", 10, minimum=1),
    # Most cursor_update broadcasts per second from one client; updates in between
    # are coalesced and the latest one is always sent.
    "CURSOR_UPDATES_PER_SECOND": env_float(
        "MATERI_CURSOR_UPDATES_PER_SECOND", 20.0, minimum=0.1
    ),
    # Take the client's address, port and scheme from the X-Forwarded-For,
    # X-Forwarded-Port and X-Forwarded-Proto headers of a reverse proxy. Only
    # safe when every request comes through that proxy, because clients can set
    # these headers themselves.
    "PROXY_HEADERS": env_bool("MATERI_PROXY_HEADERS", False),
    # Operations after which a document's stored snapshot moves to its current text.
    "SNAPSHOT_INTERVAL": env_int("MATERI_SNAPSHOT_INTERVAL", 100, minimum=1),
    # Code points of current document text each process keeps in memory, so a
    # commit or join of a recently used document does not rebuild the text. Each
    # cached operation kept with a text counts as 200 code points.
    "TEXT_CACHE_SIZE": env_int("MATERI_TEXT_CACHE_SIZE", 64 * 1024 * 1024, minimum=0),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("MATERI_LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's default configuration gives "django" a handler of its own in
        # debug mode, so without this every request error would print twice.
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.channels.server": {"level": "WARNING"},
    },
}
