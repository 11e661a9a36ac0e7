"""Production mode (DEBUG off) refuses unsafe settings at start, naming each; `check --deploy` is clean.

Each case starts a fresh Python process with a production environment, as a deployment would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOOD_SECRET = "q8M3v-Zt0pXw7LrN2cJ9hYbKe4UaD6fGs1iO5nTqVmWxRyHzBl"
# Variables the test process itself sets (tests/settings.py) that must not leak into "production".
TEST_ONLY = (
    "DEBUG",
    "SECRET_KEY",
    "TEST_DATABASE_NAME",
    "REALTIME_LOCAL_MODE",
    "ALLOWED_HOSTS",
    "OPENAI_API_KEY",
    "DJANGO_SETTINGS_MODULE",
)


def _run(tmp_path: Path, *command: str, **overrides: str | None) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if name not in TEST_ONLY}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "iaposte.settings",
            "DEBUG": "false",
            "SECRET_KEY": GOOD_SECRET,
            "ALLOWED_HOSTS": "calls.example.org",
            "OPENAI_API_KEY": "sk-not-a-real-key",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        }
    )
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_it_passes_check_deploy_with_production_settings(tmp_path):
    result = _run(tmp_path, "manage.py", "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"SECRET_KEY": None}, "SECRET_KEY is not set."),
        ({"SECRET_KEY": ""}, "SECRET_KEY is not set."),
        ({"SECRET_KEY": "django-insecure-local-development-only"}, "SECRET_KEY is a default or example value"),
        ({"SECRET_KEY": "change-me"}, "SECRET_KEY is a default or example value"),
        ({"SECRET_KEY": "short-but-random-Xy9"}, "SECRET_KEY is too weak"),
        ({"SECRET_KEY": "ab" * 40}, "SECRET_KEY is too weak"),
        ({"ALLOWED_HOSTS": None}, "ALLOWED_HOSTS is empty"),
        ({"ALLOWED_HOSTS": "*"}, "ALLOWED_HOSTS must not contain '*'"),
        ({"REALTIME_LOCAL_MODE": "true"}, "REALTIME_LOCAL_MODE must be off when DEBUG is off."),
        ({"OPENAI_API_KEY": None}, "LOCALREALTIME_API_KEY is the public default"),
        ({"CSRF_TRUSTED_ORIGINS": "calls.example.org"}, "CSRF_TRUSTED_ORIGINS entries must be full origins"),
    ],
)
def test_it_refuses_to_start_on_unsafe_settings(tmp_path, overrides, message):
    result = _run(tmp_path, "manage.py", "check", **overrides)

    assert result.returncode != 0
    assert "ImproperlyConfigured: Unsafe production settings (DEBUG is off):" in result.stderr
    assert message in result.stderr


def test_it_lists_every_problem_at_once_when_the_server_starts(tmp_path):
    # The ASGI entry point the server imports: the server itself never comes up.
    result = _run(tmp_path, "-c", "import iaposte.asgi", SECRET_KEY=None, ALLOWED_HOSTS=None, REALTIME_LOCAL_MODE="true")

    assert result.returncode != 0
    problems = [line for line in result.stderr.splitlines() if line.startswith("- ")]
    assert problems == [
        "- SECRET_KEY is not set.",
        "- ALLOWED_HOSTS is empty; list the host names this service answers to.",
        "- REALTIME_LOCAL_MODE must be off when DEBUG is off.",
    ]


def test_it_starts_with_the_embedded_engine_given_a_private_key(tmp_path):
    result = _run(tmp_path, "manage.py", "check", OPENAI_API_KEY=None, LOCALREALTIME_API_KEY="sk-local-" + "k" * 32)

    assert result.returncode == 0, result.stderr
