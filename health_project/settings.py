"""Settings, read from the environment only (see docs/phase-3/configuration.md).

HEALTH_ENV picks the mode:
- production (the default, so a deployment that forgets the variable fails closed): every
  connection variable is required, and development secrets are refused.
- development (chosen explicitly: `make run` sets it, by hand `export HEALTH_ENV=development`):
  works with nothing else set; manage.py finds the embedded services of .devstack/.
- test: like development, but the test suite points the URLs at its own throw-away set.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from core.identifiers import USER_ID_PATTERN
from health_project.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
    env_url,
    env_url_list,
)

# Lets runtime code write generic Django types (ModelAdmin[T], QuerySet[T]) as mypy sees them.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

HEALTH_ENV = env_choice("HEALTH_ENV", ("development", "test", "production"), "production")
PRODUCTION = HEALTH_ENV == "production"
# Said in every production refusal when the mode was not chosen, so the fix is obvious.
_MODE = (
    "HEALTH_ENV=production"
    if os.environ.get("HEALTH_ENV")
    else "HEALTH_ENV=production (HEALTH_ENV is unset, which means production; "
    "export HEALTH_ENV=development to run locally)"
)

# Development-only secrets. Production refuses to start with any of them.
_DEV_SECRET_KEY = "dev-insecure-secret-key-do-not-use-in-production-3f9c1a7e5b2d4c6e8f0a"
_DEV_TOKEN_KEY = "ZGV2LW9ubHktdG9rZW4ta2V5LWRvLW5vdC11c2UtISE="  # base64 of a fixed 32 bytes
_DEV_CLIENT_SECRET = "sim-client-secret"
_DEV_VERIFICATION_TOKEN = "dev-verification-token"


def _require_in_production(name: str, value: str, dev_value: str | None = None) -> str:
    if PRODUCTION and not value:
        raise ImproperlyConfigured(f"{name} must be set when {_MODE}")
    if PRODUCTION and dev_value is not None and value == dev_value:
        raise ImproperlyConfigured(
            f"{name} is the development default; set a real secret ({_MODE})"
        )
    return value


SECRET_KEY = _require_in_production(
    "DJANGO_SECRET_KEY", env_str("DJANGO_SECRET_KEY", _DEV_SECRET_KEY), _DEV_SECRET_KEY
)
if PRODUCTION and len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be at least 50 characters")

DEBUG = False if PRODUCTION else env_bool("DJANGO_DEBUG", True)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost"])
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured(f"DJANGO_ALLOWED_HOSTS must be set when {_MODE}")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# --- Connections ------------------------------------------------------------------------

# Settings never start anything. In development the URLs come from the embedded services
# that `make run` / `python -m devstack up` started (manage.py adopts running ones), or from
# the environment, as in production.
_NO_DATABASE = (
    "DATABASE_URL must be set: run `make run` or `python -m devstack up` (manage.py then finds "
    "the embedded servers), or point DATABASE_URL at a PostgreSQL server"
)
DATABASE_URL = env_url("DATABASE_URL", schemes=("postgres", "postgresql"))
if not DATABASE_URL:
    raise ImproperlyConfigured(_NO_DATABASE)
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
        conn_health_checks=True,  # without a round trip: core/postgres/base.py
        engine="core.postgres",  # stock backend + introspection of schema `health`
    )
}
DATABASES["default"].setdefault("OPTIONS", {})
# Fail fast when Postgres is gone: a webhook should get 503 quickly so Oura retries.
DATABASES["default"]["OPTIONS"]["connect_timeout"] = env_int("DATABASE_CONNECT_TIMEOUT", 3)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# One URL, or a cluster's seed list (comma-separated): the client tries each, learns the
# rest of the cluster from the one it reaches, and rides over the loss of a node.
NATS_SERVERS = env_url_list("NATS_URL", schemes=("nats", "tls"))
NATS_URL = _require_in_production("NATS_URL", ",".join(NATS_SERVERS))
# Production streams are R3 on a 3-node cluster; the embedded server is a single node.
NATS_STREAM_REPLICAS = env_int("NATS_STREAM_REPLICAS", 3 if PRODUCTION else 1, minimum=1)

S3_ENDPOINT_URL = env_url("S3_ENDPOINT_URL", schemes=("http", "https"))
if PRODUCTION and not S3_ENDPOINT_URL:
    # Empty is fine in production: boto3 then talks to AWS S3 itself.
    S3_ENDPOINT_URL = ""
S3_BUCKET = env_str("S3_BUCKET", "health-integrations-raw")
S3_REGION = env_str("S3_REGION", "us-east-1")
# moto accepts any credentials; real deployments use the AWS credential chain.
S3_ACCESS_KEY_ID = env_str("S3_ACCESS_KEY_ID", "" if PRODUCTION else "embedded")
S3_SECRET_ACCESS_KEY = env_str("S3_SECRET_ACCESS_KEY", "" if PRODUCTION else "embedded")
# "aws:kms" with S3_SSE_KMS_KEY_ID in production; AES256 (SSE-S3) works everywhere.
S3_SSE = env_choice("S3_SSE", ("AES256", "aws:kms"), "AES256")
S3_SSE_KMS_KEY_ID = env_str("S3_SSE_KMS_KEY_ID")
RAW_RETENTION_DAYS = env_int("RAW_RETENTION_DAYS", 180, minimum=1)
# Retention of the rest (docs/phase-3/privacy.md): dead letters as long as HEALTH_DLQ keeps
# their copies; audit entries six years, the longest period the policy names (erasure
# receipts, raw access): the purge removes a prefix of the chain, so one period for all.
DEAD_LETTER_RETENTION_DAYS = env_int("DEAD_LETTER_RETENTION_DAYS", 30, minimum=1)
AUDIT_RETENTION_DAYS = env_int("AUDIT_RETENTION_DAYS", 2190, minimum=30)
RAW_SIGNED_URL_TTL_S = env_int("RAW_SIGNED_URL_TTL_S", 300, minimum=10)

_storage_options: dict[str, object] = {
    "bucket_name": S3_BUCKET,
    "region_name": S3_REGION,
    "file_overwrite": True,  # keys are content-addressed by event id: a rewrite is a retry
    "querystring_auth": True,
    "querystring_expire": RAW_SIGNED_URL_TTL_S,
    "object_parameters": {"ServerSideEncryption": S3_SSE}
    | ({"SSEKMSKeyId": S3_SSE_KMS_KEY_ID} if S3_SSE_KMS_KEY_ID else {}),
    "default_acl": None,
}
if S3_ENDPOINT_URL:
    _storage_options["endpoint_url"] = S3_ENDPOINT_URL
if S3_ACCESS_KEY_ID:
    _storage_options["access_key"] = S3_ACCESS_KEY_ID
    _storage_options["secret_key"] = S3_SECRET_ACCESS_KEY

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "raw": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": _storage_options},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Oura -------------------------------------------------------------------------------

# Development points at the local simulator (python manage.py oura_simulator --port 8787).
_SIM = env_str("OURA_SIMULATOR_URL", "http://127.0.0.1:8787")
OURA_API_BASE_URL = env_url(
    "OURA_API_BASE_URL", "" if PRODUCTION else _SIM, schemes=("http", "https")
)
OURA_AUTHORIZE_URL = env_url(
    "OURA_AUTHORIZE_URL", "" if PRODUCTION else f"{_SIM}/oauth/authorize", schemes=("http", "https")
)
OURA_TOKEN_URL = env_url(
    "OURA_TOKEN_URL", "" if PRODUCTION else f"{_SIM}/oauth/token", schemes=("http", "https")
)
OURA_REVOKE_URL = env_url(
    "OURA_REVOKE_URL", "" if PRODUCTION else f"{_SIM}/oauth/revoke", schemes=("http", "https")
)
for _name in ("OURA_API_BASE_URL", "OURA_AUTHORIZE_URL", "OURA_TOKEN_URL", "OURA_REVOKE_URL"):
    _require_in_production(_name, globals()[_name])
OURA_CLIENT_ID = _require_in_production(
    "OURA_CLIENT_ID", env_str("OURA_CLIENT_ID", "" if PRODUCTION else "sim-client-id")
)
OURA_CLIENT_SECRET = _require_in_production(
    "OURA_CLIENT_SECRET", env_str("OURA_CLIENT_SECRET", _DEV_CLIENT_SECRET), _DEV_CLIENT_SECRET
)
# During a client-secret rotation Oura may sign with either secret for a while.
OURA_CLIENT_SECRET_PREVIOUS = env_str("OURA_CLIENT_SECRET_PREVIOUS")
OURA_WEBHOOK_VERIFICATION_TOKEN = _require_in_production(
    "OURA_WEBHOOK_VERIFICATION_TOKEN",
    env_str("OURA_WEBHOOK_VERIFICATION_TOKEN", _DEV_VERIFICATION_TOKEN),
    _DEV_VERIFICATION_TOKEN,
)
PUBLIC_BASE_URL = env_url(
    "PUBLIC_BASE_URL", "" if PRODUCTION else "http://127.0.0.1:8000", schemes=("http", "https")
)
_require_in_production("PUBLIC_BASE_URL", PUBLIC_BASE_URL)
OURA_REDIRECT_URI = env_str("OURA_REDIRECT_URI", f"{PUBLIC_BASE_URL}/v1/oauth/oura/callback")
OURA_WEBHOOK_CALLBACK_URL = env_str(
    "OURA_WEBHOOK_CALLBACK_URL", f"{PUBLIC_BASE_URL}/v1/webhooks/oura"
)
# Only what we read. No `email` or `personal`: the callback reads personal_info for the Oura
# user id alone, which "any access token" may read with no scope (CONTRACT 2.3, and the
# simulator blanks only age/weight/height/sex/email without them).
OURA_SCOPES = env_list("OURA_SCOPES", ["daily", "heartrate", "workout", "session", "tag", "spo2"])
OURA_HTTP_TIMEOUT_S = env_float("OURA_HTTP_TIMEOUT_S", 10.0, minimum=0.1)
OURA_MAX_RETRIES = env_int("OURA_MAX_RETRIES", 5, minimum=0)
# Oura's documented limit: 5000 requests per 5-minute window per application.
OURA_APP_RATE_LIMIT = env_int("OURA_APP_RATE_LIMIT", 5000, minimum=1)
OURA_APP_RATE_WINDOW_S = env_int("OURA_APP_RATE_WINDOW_S", 300, minimum=1)
# Several webhooks of one batch for one user and type are read with one range request
# (normalized/coalesce.py); false fetches every document by id.
OURA_COALESCE_FETCHES = env_bool("OURA_COALESCE_FETCHES", True)
OURA_OAUTH_STATE_TTL_S = env_int("OURA_OAUTH_STATE_TTL_S", 600, minimum=30)
# The circuit breaker per Oura endpoint class (ingestion/circuit_breaker.py): open after
# this many consecutive 5xx/timeouts, refuse calls for OPEN_S (doubling after each failed
# probe, up to MAX_OPEN_S), then let one probe through. docs/phase-3/consumers.md.
OURA_BREAKER_FAILURES = env_int("OURA_BREAKER_FAILURES", 5, minimum=1)
OURA_BREAKER_OPEN_S = env_float("OURA_BREAKER_OPEN_S", 30.0, minimum=0.1)
OURA_BREAKER_MAX_OPEN_S = env_float("OURA_BREAKER_MAX_OPEN_S", 300.0, minimum=0.1)

# Fernet keys, newest first. The first encrypts; all of them decrypt (rotation).
TOKEN_ENCRYPTION_KEYS = env_list("TOKEN_ENCRYPTION_KEYS", [] if PRODUCTION else [_DEV_TOKEN_KEY])
if not TOKEN_ENCRYPTION_KEYS:
    raise ImproperlyConfigured(f"TOKEN_ENCRYPTION_KEYS must be set when {_MODE}")
if PRODUCTION and _DEV_TOKEN_KEY in TOKEN_ENCRYPTION_KEYS:
    raise ImproperlyConfigured("TOKEN_ENCRYPTION_KEYS contains the development key")
for _key in TOKEN_ENCRYPTION_KEYS:
    try:
        if len(base64.urlsafe_b64decode(_key.encode())) != 32:
            raise ValueError
    except (binascii.Error, ValueError):
        raise ImproperlyConfigured(
            "TOKEN_ENCRYPTION_KEYS must be comma-separated Fernet keys "
            "(32 url-safe base64-encoded bytes each)"
        ) from None

# Keys the hashes that name a person in logs, audit entries and erasure tombstones
# (core/pseudonyms.py). Never rotate it: tombstones are matched by these hashes.
_DEV_PERSON_HASH_KEY = "dev-only-person-hash-key-do-not-use-in-production-7d41c9e2"
PERSON_HASH_KEY = _require_in_production(
    "PERSON_HASH_KEY", env_str("PERSON_HASH_KEY", _DEV_PERSON_HASH_KEY), _DEV_PERSON_HASH_KEY
)
if PRODUCTION and len(PERSON_HASH_KEY) < 32:
    raise ImproperlyConfigured("PERSON_HASH_KEY must be at least 32 characters")

# --- Webhook ingestion ------------------------------------------------------------------

# Oura's notifications are ~200 bytes (five short strings); 16 KiB is that with a wide margin,
# and caps what an unauthenticated sender can make us read and hash.
WEBHOOK_MAX_BODY_BYTES = env_int("WEBHOOK_MAX_BODY_BYTES", 16 * 1024, minimum=1024)
WEBHOOK_TIMESTAMP_TOLERANCE_S = env_int("WEBHOOK_TIMESTAMP_TOLERANCE_S", 300, minimum=1)
WEBHOOK_RATE_LIMIT_PER_MINUTE = env_int("WEBHOOK_RATE_LIMIT_PER_MINUTE", 60000, minimum=1)
# Concurrent deliveries of one process share one statement, commit and bus hand-off
# (ingestion/webhook_commit.py). Off: each request writes and publishes on its own (for
# comparing the two; the answers are the same).
WEBHOOK_GROUP_COMMIT = env_bool("WEBHOOK_GROUP_COMMIT", True)
API_RATE_LIMIT_PER_MINUTE = env_int("API_RATE_LIMIT_PER_MINUTE", 600, minimum=1)
# An API key created without an explicit expiry expires after this many days.
API_KEY_DEFAULT_EXPIRY_DAYS = env_int("API_KEY_DEFAULT_EXPIRY_DAYS", 90, minimum=1)

# --- Background jobs: dramatiq with its queue in Postgres (jobs/, docs/phase-3/backfill.md) ---
# The broker uses the `default` database; its tables live in schema "dramatiq", created
# idempotently by the dramatiq_postgres migration (so `manage.py migrate`/`provision` does it).
# A worker whose heartbeat is older than DRAMATIQ_HEARTBEAT_TTL_S is presumed dead and its
# messages are requeued by broker maintenance; jobs/reconcile.py covers what that cannot.
DRAMATIQ_BROKER = {
    "OPTIONS": {
        "schema": "dramatiq",
        "heartbeat_interval": env_float("DRAMATIQ_HEARTBEAT_INTERVAL_S", 5.0, minimum=0.5),
        "heartbeat_ttl": env_float("DRAMATIQ_HEARTBEAT_TTL_S", 60.0, minimum=2.0),
        "maintenance_interval": env_float("DRAMATIQ_MAINTENANCE_INTERVAL_S", 15.0, minimum=1.0),
    },
    "DATABASE_ALIAS": "default",
}

# --- Scheduled upkeep (upkeep/, docs/phase-3/upkeep.md) ----------------------------------
# What `manage.py run_scheduler` runs, and when. One scheduler is active across replicas (a
# Postgres advisory lock elects it). Each value is a 5-field crontab in UTC, "@every <seconds>",
# or "off"; the upkeep app checks them at start-up and names the variable that is wrong.
UPKEEP_SCHEDULE = {
    "renew_subscriptions": env_str("UPKEEP_RENEW_CRON", "17 */6 * * *"),
    "purge_raw": env_str("UPKEEP_PURGE_RAW_CRON", "43 3 * * *"),
    "reconcile_jobs": env_str("UPKEEP_RECONCILE_JOBS_CRON", "*/5 * * * *"),
    "purge_expired": env_str("UPKEEP_PURGE_EXPIRED_CRON", "51 3 * * *"),
    "resume_erasures": env_str("UPKEEP_RESUME_ERASURES_CRON", "*/15 * * * *"),
    # The missed-webhook watchdog (jobs/watchdog.py): hourly; its silence thresholds are
    # 30 h and more, so an hour adds little to how long a gap stays open.
    "watchdog": env_str("UPKEEP_WATCHDOG_CRON", "29 * * * *"),
    "heartrate_partitions": env_str("UPKEEP_HEARTRATE_PARTITIONS_CRON", "7 2 * * *"),
    # Weekly, Sunday 04:13: rebuilds the read indexes packed (normalized/maintenance.py).
    "read_indexes_repack": env_str("UPKEEP_READ_INDEXES_REPACK_CRON", "13 4 * * sun"),
}

# --- Django -----------------------------------------------------------------------------

INSTALLED_APPS = [
    # Django's admin with our site as the default one (core/staff_admin.py): every
    # @admin.register lands on a site that asks every staff account for a TOTP code.
    "core.admin_config.StaffAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "csp",
    "core",
    "audit",
    "privacy",
    "access",
    "ingestion",
    "normalized",
    "jobs",
    "backoffice",
    "upkeep",
    "oura_simulator",
    "dramatiq_postgres.django",  # dramatiq broker in Postgres (schema "dramatiq"); see jobs/
]

MIDDLEWARE = [
    # First: the request id is set before anything logs, and every response below, the
    # error middleware's 4xx/5xx included, goes back through it to get X-Request-ID.
    "core.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Any view's unexpected exception -> 500 in the error shape (core/errors.py).
    "core.errors.UnhandledErrorMiddleware",
    # Responses by route and status class; after the line above, so its 500s are counted.
    "core.metrics_middleware.ResponseMetricsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): was this session's login confirmed by a TOTP code?
    "django_otp.middleware.OTPMiddleware",
    # The absolute cap of a staff session (STAFF_SESSION_MAX_AGE_S, below).
    "core.staff_admin.SessionMaxAgeMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

# What a browser needs and a signed machine-to-machine call does not: the paths in
# LEAN_PATHS and under LEAN_PREFIXES are served without these (health_project/wsgi.py). Only
# paths whose views use no session, user, CSRF token, page or static file belong there.
BROWSER_MIDDLEWARE = frozenset(
    {
        "whitenoise.middleware.WhiteNoiseMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django_otp.middleware.OTPMiddleware",
        "core.staff_admin.SessionMaxAgeMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
        "csp.middleware.CSPMiddleware",
        "axes.middleware.AxesMiddleware",
    }
)
LEAN_PATHS = ("/v1/webhooks/oura",)
# And every path under these: the REST v1 health reads, authenticated by API key alone
# (REST_FRAMEWORK's only authentication class), whose daily page is a few milliseconds of
# SQL that the browser half would otherwise double (issue #19).
LEAN_PREFIXES = ("/v1/health/",)

ROOT_URLCONF = "health_project.urls"
# DEBUG's error page, made safe for URLs that fail to resolve (core/debug_page.py).
DEFAULT_EXCEPTION_REPORTER = "core.debug_page.ExceptionReporter"
WSGI_APPLICATION = "health_project.wsgi.application"

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

# AxesBackend first: it refuses a locked-out username before any password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".staticfiles"

# --- REST framework and OpenAPI ---------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["access.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "core.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Health integrations API",
    "DESCRIPTION": "REST v1: Oura connections, webhooks, backfill jobs and normalized reads.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # `<user_id:user_id>` (core/identifiers.py): documented with its pattern.
    "PATH_CONVERTER_OVERRIDES": {
        "user_id": {"type": "string", "pattern": USER_ID_PATTERN, "maxLength": 64}
    },
}

# --- Security (production) --------------------------------------------------------------

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = PRODUCTION
# Load balancers probe over plain HTTP inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = 31536000 if PRODUCTION else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = PRODUCTION
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# --- Staff: the admin (backoffice) ------------------------------------------------------

# Where the admin lives: ADMIN_URL_PREFIX, e.g. "staff-3f9c1a7e/" (a trailing slash is added).
# Development defaults to admin/. Production requires it and refuses "admin": the admin's
# login page is then not where scanners look (it is still behind 2FA and lockout below).
_ADMIN_PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_admin_prefix = env_str("ADMIN_URL_PREFIX", "" if PRODUCTION else "admin/").strip("/")
_require_in_production("ADMIN_URL_PREFIX", _admin_prefix, "admin")
if not _ADMIN_PREFIX_RE.fullmatch(_admin_prefix):
    raise ImproperlyConfigured(
        "ADMIN_URL_PREFIX must be URL path segments of letters, digits, '.', '_' or '-' "
        "(e.g. staff-3f9c1a7e/)"
    )
ADMIN_URL_PREFIX = _admin_prefix + "/"

# Sessions are staff sessions (the API authenticates with keys, not cookies). Two limits:
# - idle: Django saves the session on every request and the cookie lives
#   STAFF_SESSION_IDLE_TIMEOUT_S, so each request pushes the expiry out again and a session
#   left alone that long is gone (Django's own SESSION_SAVE_EVERY_REQUEST + SESSION_COOKIE_AGE).
# - absolute: however active, a login lasts STAFF_SESSION_MAX_AGE_S; the session stores when
#   it logged in and core.staff_admin.SessionMaxAgeMiddleware ends it after that.
STAFF_SESSION_IDLE_TIMEOUT_S = env_int("STAFF_SESSION_IDLE_TIMEOUT_S", 30 * 60, minimum=60)
STAFF_SESSION_MAX_AGE_S = env_int("STAFF_SESSION_MAX_AGE_S", 8 * 3600, minimum=60)
SESSION_COOKIE_AGE = STAFF_SESSION_IDLE_TIMEOUT_S
SESSION_SAVE_EVERY_REQUEST = True
SESSION_EXPIRE_AT_BROWSER_CLOSE = True

# Two-factor login (django-otp, TOTP): the admin site refuses a session its login did not
# verify with a code; a staff account without a confirmed device enrols on first login.
OTP_TOTP_ISSUER = env_str("OTP_TOTP_ISSUER", "Health integrations")

# Login throttling (django-axes): AXES_FAILURE_LIMIT wrong passwords for one username lock it
# for AXES_COOLOFF_MINUTES (each further try during the lockout starts the wait again).
# Locked by username, not by IP: behind a load balancer or proxy REMOTE_ADDR is the same for
# every client, so an IP lockout would lock every staff member out at once (axes.W006 says
# to add the IP; silenced for that reason). A guessed password alone opens nothing: 2FA.
SILENCED_SYSTEM_CHECKS = ["axes.W006"]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/lockout.html"
# Axes' access log would keep every staff login's IP and user agent; failures are enough.
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False

# Content-Security-Policy (django-csp 4): our pages load only our own scripts and styles.
# The API docs pages relax what their bundles need (health_project/urls.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- Observability ----------------------------------------------------------------------

# Where `--metrics-port` listens (core/metrics.py): loopback unless a container's scraper
# must reach it (compose.yaml, deploy/prometheus/prometheus.yml).
METRICS_ADDR = env_str("METRICS_ADDR", "127.0.0.1")
# prometheus_client's multiprocess folder (docs/phase-3/metrics.md), or "" for none. The
# library reads the variable itself at import (a missing folder fails the first metric).
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR")
LOG_LEVEL = env_choice("LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO")
LOG_FORMAT = env_choice("LOG_FORMAT", ("json", "text"), "json")
_LOG_FORMATTERS = {
    # JSON lines carry the ids as fields when known (and `extra` fields as they are).
    "json": {
        "()": "pythonjsonlogger.json.JsonFormatter",
        "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
        "static_fields": {"pii": False},
    },
    "text": {
        "()": "logging.Formatter",
        "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s "
        "request_id=%(request_id)s trace_id=%(trace_id)s",
        "defaults": {"request_id": "-", "trace_id": "-"},
    },
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        # request_id, trace_id and span_id on every record (core/observability.py).
        "context": {"()": "core.observability.LogContextFilter"},
        "redact": {"()": "core.observability.RedactFilter"},
    },
    "formatters": _LOG_FORMATTERS,
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context", "redact"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's default config gives `django` a plain console handler of its own while
        # DEBUG is on, so each of its records printed twice (plain, then JSON from the root).
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        # botocore and httpx log request details at DEBUG, including URLs with tokens.
        "botocore": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        "nats": {"level": "WARNING"},
        # axes logs every login at INFO (with the username masked); failures are WARNING.
        "axes": {"level": "WARNING"},
        # APScheduler says "Running job"/"executed successfully" for every run that
        # upkeep.services already logs as upkeep_run (with outcome and counts).
        "apscheduler": {"level": "WARNING"},
        # granian's loggers have plain-text handlers of their own; in its workers (where
        # this config runs) they go through ours instead. Its main process gets the same
        # formatter through --log-config (GRANIAN_LOG_CONFIG below, devrun/orchestrator.py).
        "_granian": {"handlers": [], "propagate": True},
        "granian.access": {"handlers": [], "propagate": True},
    },
}
# For granian's own process, which loads no Django: the same formatter, no filters (it
# logs its start, its workers' pids and its stop; never a request).
GRANIAN_LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {LOG_FORMAT: _LOG_FORMATTERS[LOG_FORMAT]},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "stream": "ext://sys.stdout",
        }
    },
    "loggers": {
        "_granian": {"handlers": ["console"], "propagate": False},
        "granian.access": {"handlers": ["console"], "propagate": False},
    },
}

SENTRY_DSN = env_str("SENTRY_DSN")
SENTRY_TRACES_SAMPLE_RATE = env_float("SENTRY_TRACES_SAMPLE_RATE", 0.0, minimum=0.0)
# Tracing reads the standard OTEL_* variables itself (core/tracing.py, at app start-up).

from core.observability import init_observability  # noqa: E402 - needs the above

init_observability(
    sentry_dsn=SENTRY_DSN,
    environment=HEALTH_ENV,
    traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE,
)
