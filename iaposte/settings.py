"""Settings for IAPosteManager Realtime.

Configuration comes only from the environment (a `.env` file is read if present; see
`.env.example`). The defaults run the whole product offline: SQLite, the in-memory channel layer
and the embedded `localrealtime` engine standing in for OpenAI. Production (`DEBUG` off) refuses to
start on values that would be unsafe.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import zoneinfo
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from realtime import catalogue

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")


def env_json(name: str, default: dict[str, Any] | list[Any]) -> Any:
    """A JSON setting of the same kind as its default (object or array); a bad value names it."""
    try:
        value = env.json(name, default=default)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be JSON ({exc}).") from None
    if not isinstance(value, type(default)):
        raise ImproperlyConfigured(f"{name} must be a JSON {'object' if isinstance(default, dict) else 'array'}.")
    return value


DEBUG = env.bool("DEBUG", default=False)
# Local mode: the API and sockets answer anonymous requests from loopback, so the seed's examples
# work as written on a developer's machine. Decided here, once: pytest-django turns DEBUG off at
# test time, and access rules must not depend on that.
REALTIME_LOCAL_MODE = env.bool("REALTIME_LOCAL_MODE", default=DEBUG)

# A development key is only ever generated for DEBUG; production must bring its own.
DEVELOPMENT_SECRET_KEY = "django-insecure-local-development-only"
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY and DEBUG:
    SECRET_KEY = DEVELOPMENT_SECRET_KEY

PORT = env.int("PORT", default=5000)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
# Origins (scheme://host) allowed to POST with a session cookie when served behind a proxy.
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "servestatic.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "axes",
    "realtime",
    "localrealtime",
]

MIDDLEWARE = [
    # First: the HTTPS redirect and CSRF checks below ask for the host too.
    "realtime.guards.ApiRequestGuardMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "realtime.middleware.ContentSecurityPolicyMiddleware",
    "django_permissions_policy.PermissionsPolicyMiddleware",
    "realtime.middleware.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: it turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

# Session-backed messages (the admin's): the default cookie storage builds a signer on every
# request, API requests included, though only the admin ever shows a message.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

ROOT_URLCONF = "iaposte.urls"
ASGI_APPLICATION = "iaposte.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            # IMMEDIATE takes the write lock when a transaction starts, so two writers queue on
            # busy_timeout instead of failing with "database is locked" half-way through.
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            # WAL lets readers run while a writer commits; synchronous=NORMAL is durable in WAL
            # across process crashes (kill -9 loses no commit: the WAL is in the OS's hands);
            # only an OS crash or power cut can lose the last commits, which FULL prevents at
            # the price of an fsync per commit (docs/operations.md).
            "init_command": f"PRAGMA journal_mode=WAL; PRAGMA synchronous={env.str('SQLITE_SYNCHRONOUS', default='NORMAL')};",
        }
    )
# Connections kept for the process (seconds; 0 closes them after each request). Call setup and
# hangup run their database work on one long-lived thread (realtime.services.in_db_thread), whose
# connection this keeps open: for SQLite, every close costs a checkpoint and an fsync.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=600)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Whether call setup and hangup use that thread (off only for tests sharing the runner's transaction).
REALTIME_DB_THREAD = env.bool("REALTIME_DB_THREAD", default=True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env.bool("DATABASE_POOL", default=True):
    # A pool rather than CONN_MAX_AGE: under ASGI every request runs its sync code in a thread of
    # its own (ThreadSensitiveContext), so per-thread persistent connections would be opened per
    # request and never reused. The pool lends one connection per query batch, checked before it
    # is lent, and bounds the backends one process holds (docs/deployment.md). Django refuses a
    # pool beside persistent connections. DATABASE_POOL=false: CONN_MAX_AGE as for SQLite.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=2),
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=20),
        # A request waits this long for a free connection, then fails (503 through our handler).
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
    }
if env.str("SQLITE_SYNCHRONOUS", default="NORMAL") not in ("NORMAL", "FULL"):
    raise ImproperlyConfigured("SQLITE_SYNCHRONOUS must be NORMAL or FULL.")
DATABASES["default"].setdefault("TEST", {})
if env.str("TEST_DATABASE_NAME", default=""):
    DATABASES["default"]["TEST"]["NAME"] = env.str("TEST_DATABASE_NAME")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = env.str("LANGUAGE_CODE", default="fr")
LANGUAGES = [("fr", _("French")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
# --- Time zone: one for logs, admin and pages ----------------------------------------------------
# Times are stored in UTC; the admin shows them, and log lines are stamped (with their offset), in
# this zone. The demo page shows each viewer's own local time and names that zone on the page.
TIME_ZONE = env.str("TIME_ZONE", default="Europe/Paris")
try:
    zoneinfo.ZoneInfo(TIME_ZONE)
except (ValueError, zoneinfo.ZoneInfoNotFoundError):
    raise ImproperlyConfigured(f"TIME_ZONE must be a time zone name such as Europe/Paris or UTC, not {TIME_ZONE!r}.") from None
USE_I18N = True
USE_TZ = True
# --- Admin console: dates and times to the second (support staff match them against logs) ---
FORMAT_MODULE_PATH = ["iaposte.formats"]

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

if env.str("REDIS_URL", default=""):
    # Redis pub/sub rather than channels_redis' list-per-channel layer: a push to the calls feed
    # is one PUBLISH that each web process receives once and hands to its own subscribers,
    # instead of one Redis write per subscriber (2,000 feeds timed out on the latter; see
    # docs/benchmarks.md, "Scaled topology"). Pushes are not stored: a feed that is not
    # connected has nothing to catch up on anyway. Our subclass decodes a push once per process
    # rather than once per subscriber (realtime.layers).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "realtime.layers.FanOutRedisPubSubChannelLayer",
            "CONFIG": {"hosts": [env.str("REDIS_URL")]},
        }
    }
else:
    # One process serves everything in the embedded default, so an in-memory layer reaches
    # every socket; several processes need Redis (REDIS_URL).
    CHANNEL_LAYERS = {"default": {"BACKEND": "realtime.layers.FanOutInMemoryChannelLayer"}}

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "realtime.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        # No FormParser: form-encoded bodies get 415, as docs/api.md says (an SDP's line breaks and
        # a session's JSON do not belong in a URL-encoded form).
    ],
    # Bearer keys first: the first class names the WWW-Authenticate challenge of a 401.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "realtime.auth.authentication.ApiKeyAuthentication",
        "realtime.auth.authentication.StaffSessionAuthentication",
        "realtime.auth.authentication.LocalModeAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["realtime.permissions.RealtimeAccess"],
    "DEFAULT_THROTTLE_CLASSES": [
        "realtime.throttling.ApiKeyThrottle",
        "realtime.throttling.StaffThrottle",
        "realtime.throttling.AnonymousThrottle",
    ],
    "EXCEPTION_HANDLER": "realtime.exceptions.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "realtime.openapi.EnvelopeAutoSchema",
    "UNAUTHENTICATED_USER": None,
    # The client address is REMOTE_ADDR unless told how many proxies stand in front: an
    # X-Forwarded-For a client wrote itself must not pick its throttling bucket.
    "NUM_PROXIES": env.int("REALTIME_NUM_PROXIES", default=0),
}
# Addresses (or networks) of the reverse proxy in front (nginx): only from them is X-Real-IP
# believed as the client's address (realtime/proxy.py). Empty: the socket's peer is the client.
REALTIME_TRUSTED_PROXIES = env.list("REALTIME_TRUSTED_PROXIES", default=[])

# Requests per period ("120/min", "10/s", "5000/day"); empty means unlimited. Read at request
# time by realtime.throttling, so they can change without restarting the throttle classes.
REALTIME_THROTTLE_RATES = {
    "api_key": env.str("REALTIME_THROTTLE_API_KEY", default="600/min") or None,
    "staff": env.str("REALTIME_THROTTLE_STAFF", default="600/min") or None,
    "anonymous": env.str("REALTIME_THROTTLE_ANONYMOUS", default="300/min") or None,
}
# Throttle counters live in the cache: per process by default, shared (redis://...) when several
# web processes serve the API.
# With REDIS_URL (scaled: several processes) and no CACHE_URL, the cache is that same Redis, so
# every web process counts against the same throttle buckets.
CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://")}
if env.str("REDIS_URL", default="") and not env.str("CACHE_URL", default=""):
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": env.str("REDIS_URL"), "KEY_PREFIX": "iaposte"}
    }

# --- Password guessing: django-axes on every staff sign-in (/accounts/login/, /admin/login/) ---
# Its backend comes first so a locked-out user and address is refused before any password check.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
# Attempts live in the database, which every process shares, so a lockout holds across processes.
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
# Locked out by the pair: a guesser cannot lock every staff account from one address, and a
# known user cannot be guessed at from one address forever.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
# Hours a lockout lasts (0: until reset in the admin or by `manage.py axes_reset`).
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=1.0) or None
AXES_RESET_ON_SUCCESS = True
# The same client address as the API's throttling (REALTIME_NUM_PROXIES), never a header a
# client wrote itself.
AXES_CLIENT_IP_CALLABLE = "realtime.auth.lockout.client_address"
AXES_LOCKOUT_CALLABLE = "realtime.auth.lockout.locked_out"
# Passwords are never logged, in clear or hashed.
AXES_SENSITIVE_PARAMETERS = ["password"]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = env.str("LOGIN_REDIRECT_URL", default="/realtime-api.html")
LOGOUT_REDIRECT_URL = "login"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {
            "()": "realtime.logfilters.ZonedFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "time_zone": TIME_ZONE,
        }
    },
    "filters": {"one_line": {"()": "realtime.logfilters.OneLineSecurityLog"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        # Refused requests (bad Host, suspicious input) cost anyone one header: one line each.
        "security": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["one_line"]},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "django.security": {"handlers": ["security"], "level": "WARNING", "propagate": False},
        "realtime": {"level": env.str("LOG_LEVEL", default="INFO")},
        "localrealtime": {"level": env.str("LOG_LEVEL", default="INFO")},
        # aioice logs every ICE check at INFO.
        "aioice": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        # The SDK logs request options (SDPs, instructions) at DEBUG; never let them through.
        "openai": {"level": "WARNING"},
    },
}

# --- OpenAI Realtime upstream -------------------------------------------------------------
# With no OPENAI_API_KEY, the local engine (localrealtime) stands in for OpenAI and the
# production client code talks to it exactly as it would to OpenAI.
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
LOCALREALTIME_ENABLED = env.bool("LOCALREALTIME_ENABLED", default=not OPENAI_API_KEY)
LOCALREALTIME_API_KEY = env.str("LOCALREALTIME_API_KEY", default="sk-localrealtime")
# Where the engine listens: its own server (`manage.py localrealtime`, or beside the site in
# `manage.py serve`), on the port after the web server's unless told.
LOCALREALTIME_HOST = env.str("LOCALREALTIME_HOST", default="127.0.0.1")
LOCALREALTIME_PORT = env.int("LOCALREALTIME_PORT", default=PORT + 1)
_LOCALREALTIME_URL_HOST = f"[{LOCALREALTIME_HOST}]" if ":" in LOCALREALTIME_HOST else LOCALREALTIME_HOST
OPENAI_BASE_URL = env.str(
    "OPENAI_BASE_URL",
    default=f"http://{_LOCALREALTIME_URL_HOST}:{LOCALREALTIME_PORT}/v1" if not OPENAI_API_KEY else "https://api.openai.com/v1",
)
# Seconds to wait for OpenAI to answer an SDP offer before giving up with a 504.
OPENAI_TIMEOUT = env.float("OPENAI_TIMEOUT", default=15.0)

REALTIME_DEFAULT_MODEL = env.str("REALTIME_DEFAULT_MODEL", default="gpt-realtime-2.1")
# The seed's (retired beta) model names, mapped to the GA model that serves them today.
REALTIME_MODEL_ALIASES: dict[str, str] = {**catalogue.retired_aliases(), **env_json("REALTIME_MODEL_ALIASES", {})}
# Model family -> the model a request naming it is sent to once OpenAI has shut it down (from
# `realtime/catalogue.json`, extended or overridden here). A shut-down model without one is refused.
REALTIME_MODEL_SUCCESSORS: dict[str, str] = {**catalogue.successors(), **env_json("REALTIME_MODEL_SUCCESSORS", {})}

# Request and SDP caps: a browser offer is 3-6 KiB; anything far larger is abuse or a mistake.
REALTIME_MAX_BODY_BYTES = env.int("REALTIME_MAX_BODY_BYTES", default=256 * 1024)
REALTIME_MAX_SDP_BYTES = env.int("REALTIME_MAX_SDP_BYTES", default=64 * 1024)
REALTIME_MAX_INSTRUCTIONS_CHARS = env.int("REALTIME_MAX_INSTRUCTIONS_CHARS", default=32_000)
REALTIME_LIST_MAX_LIMIT = env.int("REALTIME_LIST_MAX_LIMIT", default=100)
REALTIME_EVENTS_MAX_LIMIT = env.int("REALTIME_EVENTS_MAX_LIMIT", default=1000)
DATA_UPLOAD_MAX_MEMORY_SIZE = REALTIME_MAX_BODY_BYTES

# ICE servers handed to browsers by the demo page. None by default: no public STUN host is
# contacted, and callers on the same machine or network connect through host candidates.
REALTIME_ICE_SERVERS = env_json("REALTIME_ICE_SERVERS", [])

# Addresses the embedded engine offers as ICE host candidates (its callers are local).
LOCALREALTIME_ICE_ADDRESSES = env.list("LOCALREALTIME_ICE_ADDRESSES", default=["127.0.0.1"])
# Delay added before the embedded engine answers an offer (milliseconds), for benchmarks.
LOCALREALTIME_ANSWER_DELAY_MS = env.int("LOCALREALTIME_ANSWER_DELAY_MS", default=0)
# Seconds a call may wait for its caller's media to connect before the engine drops it.
LOCALREALTIME_CONNECT_TIMEOUT = env.float("LOCALREALTIME_CONNECT_TIMEOUT", default=60.0)
# OpenAI closes a realtime session after 60 minutes; the engine does the same.
LOCALREALTIME_MAX_SESSION_SECONDS = env.float("LOCALREALTIME_MAX_SESSION_SECONDS", default=3600.0)
# Ended calls the engine remembers (for `/v1/_local/calls/{id}` and hangup counts); each holds its
# closed peer connection, so this bounds the engine's memory, not the broker's.
LOCALREALTIME_KEEP_ENDED = env.int("LOCALREALTIME_KEEP_ENDED", default=1000)
# Rate limits the embedded engine reports in `rate_limits.updated` (per session, reset every minute).
LOCALREALTIME_RATE_LIMITS = {"requests": 5000, "tokens": 400_000}

# --- the embedded engine's voice (call quality figures) -------------------------------------------
# How long the engine "thinks" before its spoken answer starts (milliseconds): a fixed part plus a
# random part up to the jitter, so turn latencies are real, varied and non-zero (docs/quality.md).
LOCALREALTIME_RESPONSE_DELAY_MS = env.int("LOCALREALTIME_RESPONSE_DELAY_MS", default=300)
LOCALREALTIME_RESPONSE_JITTER_MS = env.int("LOCALREALTIME_RESPONSE_JITTER_MS", default=400)

# --- phone calls (SIP) ----------------------------------------------------------------------------
# OpenAI signs its webhooks with the project's secret (whsec_...). During a rotation OpenAI keeps the
# old secret valid for 24 hours: list both, comma-separated, and drop the old one after that.
# Offline, the embedded engine signs with LOCALREALTIME_WEBHOOK_SECRET, which is then the default.
# Derived from the engine's API key unless set: as private as that key (which production requires
# to be private), and the same in every process that shares the key.
LOCALREALTIME_WEBHOOK_SECRET = env.str("LOCALREALTIME_WEBHOOK_SECRET", default="") or (
    "whsec_" + base64.b64encode(hashlib.sha256(f"webhook:{LOCALREALTIME_API_KEY}".encode()).digest()).decode()
)
OPENAI_WEBHOOK_SECRETS = env.list("OPENAI_WEBHOOK_SECRETS", default=[LOCALREALTIME_WEBHOOK_SECRET] if LOCALREALTIME_ENABLED else [])
# A realtime.call.incoming body is under 4 KiB; anything far larger is refused unread.
REALTIME_SIP_WEBHOOK_MAX_BYTES = env.int("REALTIME_SIP_WEBHOOK_MAX_BYTES", default=64 * 1024)
# SIP status for a call no route matches (404: nobody here answers that number).
REALTIME_SIP_NO_ROUTE_STATUS = env.int("REALTIME_SIP_NO_ROUTE_STATUS", default=404)
# SIP status when the concurrency limit is reached (486 Busy Here).
REALTIME_SIP_BUSY_STATUS = env.int("REALTIME_SIP_BUSY_STATUS", default=486)

# The embedded engine's SIP side (OpenAI's SIP trunk, offline): loopback UDP and TCP.
LOCALREALTIME_SIP_HOST = env.str("LOCALREALTIME_SIP_HOST", default="127.0.0.1")
LOCALREALTIME_SIP_PORT = env.int("LOCALREALTIME_SIP_PORT", default=5070)
LOCALREALTIME_PROJECT_ID = env.str("LOCALREALTIME_PROJECT_ID", default="proj_local")
# Where the engine POSTs realtime.call.incoming (our own webhook on this server by default).
LOCALREALTIME_SIP_WEBHOOK_URL = env.str("LOCALREALTIME_SIP_WEBHOOK_URL", default=f"http://127.0.0.1:{PORT}/api/realtime/sip/webhook")
# Assumptions where OpenAI documents nothing (see docs/sip.md):
# - codecs offered on the SIP leg, in order of preference (seen: PCMU, PCMA, telephone-event);
LOCALREALTIME_SIP_CODECS = env.list("LOCALREALTIME_SIP_CODECS", default=["PCMU", "PCMA"])
# - how long a call rings unanswered (no accept or reject) before it is refused, and with what;
LOCALREALTIME_SIP_DECIDE_SECONDS = env.float("LOCALREALTIME_SIP_DECIDE_SECONDS", default=30.0)
LOCALREALTIME_SIP_DECIDE_STATUS = env.int("LOCALREALTIME_SIP_DECIDE_STATUS", default=408)
# - whether the engine hangs up (BYE) once the transferee reports the transfer succeeded.
LOCALREALTIME_SIP_BYE_AFTER_REFER = env.bool("LOCALREALTIME_SIP_BYE_AFTER_REFER", default=True)
# How many times the engine delivers each webhook (2: a retry arrives as a duplicate), for tests.
LOCALREALTIME_SIP_WEBHOOK_COPIES = env.int("LOCALREALTIME_SIP_WEBHOOK_COPIES", default=1)

# --- call monitoring, usage and cost ------------------------------------------------------------
# Where sideband monitors run: "embedded" (inside the one server process, the default without
# Redis), "worker" (`manage.py realtime_worker` processes, the default with REDIS_URL), or "off".
REALTIME_MONITORS = env.str("REALTIME_MONITORS", default="worker" if env.str("REDIS_URL", default="") else "embedded")
if REALTIME_MONITORS not in ("embedded", "worker", "off"):
    raise ImproperlyConfigured("REALTIME_MONITORS must be 'embedded', 'worker' or 'off'.")
# A monitor holds its call through a lease it renews every third of it; when its process dies,
# another one takes the call over once the lease has run out.
REALTIME_MONITOR_LEASE_SECONDS = env.float("REALTIME_MONITOR_LEASE_SECONDS", default=10.0)
# How often a supervisor looks for calls to claim (one indexed read), whatever the lease: a
# monitor joins a new call within this time, before the caller's first turn, and calls answered
# meanwhile are claimed a few at a time rather than in a burst every third of a lease (a burst that
# held up phone-call decisions: docs/benchmarks.md, "Phone calls (SIP)").
REALTIME_MONITOR_CLAIM_SECONDS = env.float("REALTIME_MONITOR_CLAIM_SECONDS", default=0.5)
# Calls one monitor process watches at most.
REALTIME_MONITOR_MAX_CALLS = env.int("REALTIME_MONITOR_MAX_CALLS", default=500)
# Events are stored in batches: at most this many per transaction, at least every this many ms.
REALTIME_MONITOR_BATCH_SIZE = env.int("REALTIME_MONITOR_BATCH_SIZE", default=500)
REALTIME_MONITOR_FLUSH_MS = env.int("REALTIME_MONITOR_FLUSH_MS", default=100)
# Reconnection attempts before a call whose sideband cannot be reached is ended as upstream_error.
REALTIME_MONITOR_RECONNECT_ATTEMPTS = env.int("REALTIME_MONITOR_RECONNECT_ATTEMPTS", default=6)

# --- event-loop pauses: the garbage collector, the GIL ----------------------------------------
# Whether a server freezes its start-up heap once it listens (realtime.heap): full collections then
# walk only what was allocated since, instead of pausing the loop for 60-450 ms (docs/benchmarks.md).
REALTIME_GC_FREEZE = env.bool("REALTIME_GC_FREEZE", default=True)
# How long (ms) a thread of `manage.py serve` may keep the GIL while another waits (Python's default
# is 5): the loop thread waits that long, at worst, each time it gets the GIL back from call
# setup's database thread or Django's threads. 1 ms: phone-call decision p50 and p99 lower in 4 of
# 4 paired runs, for 1-3 ms more CPU per call (docs/benchmarks.md). 0 keeps Python's default.
REALTIME_GIL_SWITCH_MS = env.float("REALTIME_GIL_SWITCH_MS", default=1.0)

# --- limits: every call ends, with a reason -----------------------------------------------------
# OpenAI ends a realtime session after 60 minutes; our limit stays below it so the end is ours.
OPENAI_MAX_SESSION_SECONDS = 3600
# A call is hung up (reason max_duration) after this long; a session may ask for less
# (`max_duration_seconds`), never for more.
REALTIME_MAX_DURATION_SECONDS = env.int("REALTIME_MAX_DURATION_SECONDS", default=30 * 60)
if not 1 <= REALTIME_MAX_DURATION_SECONDS <= OPENAI_MAX_SESSION_SECONDS:
    raise ImproperlyConfigured(f"REALTIME_MAX_DURATION_SECONDS must be between 1 and {OPENAI_MAX_SESSION_SECONDS}.")
# No speech from either side for this long ends the call (idle_timeout); 0 turns it off.
REALTIME_IDLE_TIMEOUT_SECONDS = env.int("REALTIME_IDLE_TIMEOUT_SECONDS", default=5 * 60)
# A call still pending (never answered) after this long ends as setup_timeout.
REALTIME_SETUP_TIMEOUT_SECONDS = env.int("REALTIME_SETUP_TIMEOUT_SECONDS", default=60)
# How often the sweeper looks for calls past a limit and hangups to retry.
REALTIME_SWEEP_INTERVAL_SECONDS = env.float("REALTIME_SWEEP_INTERVAL_SECONDS", default=2.0)
# Upstream hangups that failed are retried with exponential backoff, from the first delay up to the cap.
REALTIME_HANGUP_RETRY_SECONDS = env.float("REALTIME_HANGUP_RETRY_SECONDS", default=2.0)
REALTIME_HANGUP_RETRY_MAX_SECONDS = env.float("REALTIME_HANGUP_RETRY_MAX_SECONDS", default=300.0)
# Live (pending or active) calls at once: in all, and per API key; 0 means no limit.
REALTIME_MAX_ACTIVE_CALLS = env.int("REALTIME_MAX_ACTIVE_CALLS", default=100)
# The default of each key's own limit (ApiKey.max_active_calls overrides it).
REALTIME_MAX_ACTIVE_CALLS_PER_KEY = env.int("REALTIME_MAX_ACTIVE_CALLS_PER_KEY", default=0)
# Places of the global cap kept for callers with no call in progress, so one tenant cannot take
# them all: by default a tenth of the cap.
REALTIME_RESERVED_CALLS = env.int("REALTIME_RESERVED_CALLS", default=REALTIME_MAX_ACTIVE_CALLS // 10)
if REALTIME_MAX_ACTIVE_CALLS and not 0 <= REALTIME_RESERVED_CALLS < REALTIME_MAX_ACTIVE_CALLS:
    raise ImproperlyConfigured("REALTIME_RESERVED_CALLS must be at least 0 and below REALTIME_MAX_ACTIVE_CALLS.")
# How long an Idempotency-Key on POST /api/realtime/calls is remembered.
REALTIME_IDEMPOTENCY_TTL_SECONDS = env.int("REALTIME_IDEMPOTENCY_TTL_SECONDS", default=24 * 3600)

# USD per 1M tokens, per upstream model (OpenAI's published prices, from `realtime/catalogue.json`;
# dated snapshots match by prefix), extended or overridden by the REALTIME_PRICING variable. Cached
# tokens are a subset of input tokens and are billed at the cached rate.
REALTIME_PRICING: dict[str, dict[str, float]] = {**catalogue.token_prices(), **env_json("REALTIME_PRICING", {})}
# Input transcription is billed apart, at the transcription model's rate: USD per minute of audio
# (for models billed by duration) or per 1M tokens ("text_in", "audio_in", "text_out").
REALTIME_TRANSCRIPTION_PRICING: dict[str, dict[str, float]] = {
    **catalogue.transcription_prices(),
    **env_json("REALTIME_TRANSCRIPTION_PRICING", {}),
}

# --- outgoing webhooks (realtime/webhooks, docs/webhooks.md) ----------------------------------
# Networks a webhook URL may resolve to although they are not public (private, loopback,
# link-local...): none by default, so nobody can make us call the machine's own services (SSRF).
REALTIME_WEBHOOK_ALLOWED_NETWORKS: list[str] = env.list("REALTIME_WEBHOOK_ALLOWED_NETWORKS", default=[])
for _network in REALTIME_WEBHOOK_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network.strip(), strict=False)
    except ValueError as exc:
        raise ImproperlyConfigured(f"REALTIME_WEBHOOK_ALLOWED_NETWORKS: {exc}") from None
# How often the dispatcher looks for due deliveries, and how many it sends at once (in all, and
# to one endpoint).
REALTIME_WEBHOOK_POLL_SECONDS = env.float("REALTIME_WEBHOOK_POLL_SECONDS", default=1.0)
REALTIME_WEBHOOK_BATCH = env.int("REALTIME_WEBHOOK_BATCH", default=50)
REALTIME_WEBHOOK_ENDPOINT_CONCURRENCY = env.int("REALTIME_WEBHOOK_ENDPOINT_CONCURRENCY", default=4)
# One attempt may take this long in all (connect, send, read the first KiB of the answer).
REALTIME_WEBHOOK_TIMEOUT_SECONDS = env.float("REALTIME_WEBHOOK_TIMEOUT_SECONDS", default=10.0)
# A claimed delivery whose dispatcher died is claimed again after this long.
REALTIME_WEBHOOK_LEASE_SECONDS = env.float("REALTIME_WEBHOOK_LEASE_SECONDS", default=60.0)
# Retries: exponential backoff with jitter from the first delay to the cap, for this many hours
# after the event (then the delivery is marked failed, and kept: "send again" still works).
REALTIME_WEBHOOK_RETRY_SECONDS = env.float("REALTIME_WEBHOOK_RETRY_SECONDS", default=5.0)
REALTIME_WEBHOOK_RETRY_MAX_SECONDS = env.float("REALTIME_WEBHOOK_RETRY_MAX_SECONDS", default=4 * 3600.0)
REALTIME_WEBHOOK_RETRY_HOURS = env.float("REALTIME_WEBHOOK_RETRY_HOURS", default=72.0)
# An endpoint is disabled after this many failed attempts in a row spanning at least this long.
REALTIME_WEBHOOK_DISABLE_AFTER_FAILURES = env.int("REALTIME_WEBHOOK_DISABLE_AFTER_FAILURES", default=15)
REALTIME_WEBHOOK_DISABLE_AFTER_HOURS = env.float("REALTIME_WEBHOOK_DISABLE_AFTER_HOURS", default=24.0)
# After a secret rotation, deliveries are signed with both secrets for this long.
REALTIME_WEBHOOK_SECRET_OVERLAP_HOURS = env.float("REALTIME_WEBHOOK_SECRET_OVERLAP_HOURS", default=24.0)
# A PEM file of CA certificates trusted for HTTPS receivers besides the public CAs (certifi's
# bundle, httpx's default): receivers with certificates from an internal CA. Checked at start.
REALTIME_WEBHOOK_CA_FILE = env.str("REALTIME_WEBHOOK_CA_FILE", default="")
if REALTIME_WEBHOOK_CA_FILE and not Path(REALTIME_WEBHOOK_CA_FILE).is_file():
    raise ImproperlyConfigured(f"REALTIME_WEBHOOK_CA_FILE: no such file {REALTIME_WEBHOOK_CA_FILE!r}")


# --- retention of personal data (docs/privacy.md) ----------------------------------------------
# Days after a call ends before each kind of its data is purged (replaced by a marker, the call
# and its statistics kept); an empty value keeps that kind forever. Offers and answers carry IP
# addresses; instructions and session documents, transcripts and phone numbers are personal data.
def _retention_days(name: str, default: int | None) -> int | None:
    raw = env.str(name, default="" if default is None else str(default)).strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise ImproperlyConfigured(f"{name} must be a whole number of days, or empty to keep forever.")
    return int(raw)


REALTIME_RETENTION_DAYS: dict[str, int | None] = {
    # SDP offers and answers (IP addresses, ICE candidates).
    "sdp": _retention_days("REALTIME_RETAIN_SDP_DAYS", 30),
    # instructions and the session documents asked for and sent upstream.
    "session": _retention_days("REALTIME_RETAIN_SESSION_DAYS", 90),
    # transcripts and speech events (what was said, and when).
    "transcripts": _retention_days("REALTIME_RETAIN_TRANSCRIPTS_DAYS", 90),
    # caller and called numbers, SIP headers, transfer targets.
    "caller_numbers": _retention_days("REALTIME_RETAIN_CALLER_NUMBERS_DAYS", 90),
    # every other upstream event's content (the call's own audit events are kept).
    "events": _retention_days("REALTIME_RETAIN_EVENTS_DAYS", 365),
    # whole calls and their events, deleted (statistics keep counting them): kept by default.
    "calls": _retention_days("REALTIME_RETAIN_CALLS_DAYS", None),
}
# How often the background purge runs, and how many calls (per kind) each batch handles.
REALTIME_PURGE_INTERVAL_SECONDS = env.float("REALTIME_PURGE_INTERVAL_SECONDS", default=3600.0)
REALTIME_PURGE_BATCH_SIZE = env.int("REALTIME_PURGE_BATCH_SIZE", default=10)
# The share of the time the background purge may work: after each batch it rests for as long as
# the batch took, times (1 / share - 1), so live requests in the same process keep the CPU (and
# the database) most of the time; a backlog takes longer to clear, which nobody waits for.
REALTIME_PURGE_SHARE = env.float("REALTIME_PURGE_SHARE", default=0.2)
if not 0 < REALTIME_PURGE_SHARE <= 1:
    raise ImproperlyConfigured("REALTIME_PURGE_SHARE must be above 0 and at most 1.")
# Replace phone numbers and e-mail addresses in transcripts before they are stored; the region
# reads numbers written without a country code.
REALTIME_REDACT_TRANSCRIPTS = env.bool("REALTIME_REDACT_TRANSCRIPTS", default=False)
REALTIME_REDACT_PHONE_REGION = env.str("REALTIME_REDACT_PHONE_REGION", default="FR")

# The OpenAPI description (`realtime/openapi.py`); Swagger UI and Redoc from our own static files.
SPECTACULAR_SETTINGS = {
    "TITLE": "IAPosteManager Realtime API",
    "DESCRIPTION": "Brokers, records and supervises OpenAI Realtime calls. Errors: "
    '`{"success": false, "error": {"code", "message", "details"}}`.',
    "VERSION": "1.0.0",
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["realtime.openapi.seed_paths", "realtime.openapi.sip_webhook_path"],
    # OpenAPI 3.1 for its root `webhooks` section: the events we POST to integrators (one import
    # path to the list of them, so a new event type is described where it is declared).
    "WEBHOOKS": "realtime.webhooks.openapi.OUTGOING",
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "realtime.webhooks.openapi.webhook_headers"],
}

# --- Browser-facing safety ----------------------------------------------------------------
# Content security policy: the pages run only their own /static/ files. json_script blocks are
# application/json, never executed, so they need no exception; sockets go to this same host.
REALTIME_CSP = env.str(
    "REALTIME_CSP",
    default=(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' {websocket_origins}; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
)
# The demo page needs the microphone; nothing here needs a camera or a location.
PERMISSIONS_POLICY: dict[str, list[str]] = {"microphone": ["self"], "camera": [], "geolocation": [], "payment": [], "usb": []}
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
# Production is served over HTTPS (directly or behind a proxy that says so).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
    # Only behind a proxy that always sets (and overwrites) X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Health probes that cannot follow the HTTPS redirect (regexes on the path without its slash).
SECURE_REDIRECT_EXEMPT = env.list("SECURE_REDIRECT_EXEMPT", default=[])


def _production_problems() -> list[str]:
    """Every setting that makes a non-DEBUG deployment unsafe, each named, so one start lists them all."""
    problems = []
    if not SECRET_KEY:
        problems.append("SECRET_KEY is not set.")
    elif SECRET_KEY.startswith("django-insecure") or SECRET_KEY.lower() in {"change-me", "changeme", "secret"}:
        problems.append("SECRET_KEY is a default or example value; generate a new one.")
    elif len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        problems.append("SECRET_KEY is too weak (use at least 50 random characters).")
    if not ALLOWED_HOSTS:
        problems.append("ALLOWED_HOSTS is empty; list the host names this service answers to.")
    elif "*" in ALLOWED_HOSTS:
        problems.append("ALLOWED_HOSTS must not contain '*'.")
    if REALTIME_LOCAL_MODE:
        # Behind a reverse proxy on the same host every request comes from loopback: local mode
        # would let the whole internet in anonymously.
        problems.append("REALTIME_LOCAL_MODE must be off when DEBUG is off.")
    if LOCALREALTIME_ENABLED and LOCALREALTIME_API_KEY == "sk-localrealtime":
        problems.append("LOCALREALTIME_API_KEY is the public default; set OPENAI_API_KEY, or a private LOCALREALTIME_API_KEY.")
    if any(origin.endswith("*") or "://" not in origin for origin in CSRF_TRUSTED_ORIGINS):
        problems.append("CSRF_TRUSTED_ORIGINS entries must be full origins such as https://calls.example.org.")
    return problems


if not DEBUG and (_problems := _production_problems()):
    raise ImproperlyConfigured("Unsafe production settings (DEBUG is off):\n- " + "\n- ".join(_problems))
