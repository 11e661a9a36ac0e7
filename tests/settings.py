"""Test settings: the project's settings, offline, with a file database the test server can share."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("SECRET_KEY", "tests-only-not-secret")
os.environ["OPENAI_API_KEY"] = ""
# A file, not :memory:, so the real ASGI server started by the tests (another process) sees it.
# With DATABASE_URL=postgres://... (the PostgreSQL run of `make test`) the test database is
# PostgreSQL's own test_<name>.
if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
    os.environ.setdefault("TEST_DATABASE_NAME", os.path.join(tempfile.gettempdir(), f"iaposte-test-{os.getpid()}.sqlite3"))

from iaposte.settings import *  # noqa: F403

LOCALREALTIME_ENABLED = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed
OPENAI_TIMEOUT = 2.0
LANGUAGE_CODE = "en"
# Services' database work on the test runner's own connection (and its per-test transaction); the
# real servers the tests start use their database thread.
REALTIME_DB_THREAD = False
# Nothing listens here: a test talks upstream only through the shared server's engine, which it
# asks for (the `upstream` marker or the `asgi_server` fixture; see conftest.py).
OPENAI_BASE_URL = "http://127.0.0.1:9/v1"
# The test process itself connects without the pool: pytest-django drops the test database at
# the end, which PostgreSQL refuses while the pool still holds connections to it. The servers the
# tests start (iaposte.settings) keep theirs.
DATABASES["default"].get("OPTIONS", {}).pop("pool", None)  # noqa: F405
# Webhook receivers in the tests listen on loopback.
REALTIME_WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]
