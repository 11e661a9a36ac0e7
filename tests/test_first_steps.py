"""The README's first steps after `make run` (`make superuser`, `make api-key`), run as written in
a shell with nothing set (no DEBUG, no settings module), against a database of their own; and
what `make run` prints once it is ready."""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import ROOT, _free_port, start_server, stop_server

# What a newcomer's shell does not have: the test settings' own variables.
NOT_SET = ("DEBUG", "DJANGO_SETTINGS_MODULE", "SECRET_KEY", "TEST_DATABASE_NAME", "DATABASE_URL", "REALTIME_LOCAL_MODE", "ALLOWED_HOSTS")
# What `make test` passes to the commands it runs: a newcomer's shell has none of it (with
# MAKELEVEL set, make prints "Entering/Leaving directory" around its output).
NOT_SET += ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "PORT")


def _first_steps() -> list[list[str]]:
    """The commands of the README's "First steps" block, each split as the shell would."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### First steps", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the README's first steps should be a sh block"
    return [shlex.split(line, comments=True) for line in block.group(1).splitlines() if line.strip()]


def _newcomer_env(database: Path, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in NOT_SET}
    return {**env, "DATABASE_URL": f"sqlite:///{database}", **extra}


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if command[0] == "make":
        # The suite runs after `make install` (`make test` depends on it): installing again is not
        # what is tested here, so make takes the virtualenv as up to date.
        command = [command[0], "-o", ".venv/bin/.installed", *command[1:]]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_it_runs_the_readmes_first_steps_as_written(tmp_path):
    database = tmp_path / "first-steps.sqlite3"
    # Django's own variables: a script is not prompted (the README says so).
    env = _newcomer_env(
        database,
        DJANGO_SUPERUSER_USERNAME="marie",
        DJANGO_SUPERUSER_EMAIL="marie@example.org",
        DJANGO_SUPERUSER_PASSWORD="Une-phrase-longue-42",
    )
    steps = _first_steps()
    assert [step[:2] for step in steps] == [["make", "superuser"], ["make", "api-key"]]

    results = [_run(step, env) for step in steps]

    assert [result.returncode for result in results] == [0, 0], [result.stderr for result in results]
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT username, is_superuser, is_staff FROM auth_user").fetchall() == [("marie", 1, 1)]
        keys = db.execute("SELECT name, prefix FROM realtime_apikey").fetchall()
    # The key alone on stdout (make echoes its commands there first), stored by its prefix.
    key = results[1].stdout.strip().splitlines()[-1]
    assert key.startswith("iap_")
    assert keys == [("standard téléphonique", key[: len(keys[0][1])])]


def test_it_needs_the_make_targets_because_manage_py_alone_refuses_without_debug(tmp_path):
    # The same command by hand, in the same shell: production settings, which refuse to start.
    result = _run([".venv/bin/python", "manage.py", "create_api_key", "x"], _newcomer_env(tmp_path / "db.sqlite3"))

    assert result.returncode == 1
    assert "Unsafe production settings (DEBUG is off)" in result.stderr


def test_it_asks_for_the_keys_name(tmp_path):
    result = _run(["make", "api-key"], _newcomer_env(tmp_path / "db.sqlite3"))

    assert result.returncode == 2
    assert 'Name the key: make api-key NAME="standard téléphonique"' in result.stderr
    assert not (tmp_path / "db.sqlite3").exists()


@pytest.mark.django_db(transaction=True)
def test_it_prints_where_everything_is_once_ready(tmp_path):
    sip_port = _free_port()
    server = start_server(tmp_path, extra_env={"TIME_ZONE": "America/Montreal", "LOCALREALTIME_SIP_PORT": str(sip_port)})
    try:
        # Printed once the engine and its SIP side listen too, which may be just after the site.
        deadline = time.monotonic() + 10
        while "  Time zone" not in server.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        lines = server.log.read_text().splitlines()
    finally:
        stop_server(server)
    engine_port = server.engine_url.rsplit(":", 1)[1].split("/")[0]
    start = lines.index("Ready:")
    assert lines[start : start + 8] == [
        "Ready:",
        f"  Demo page     {server.url}/realtime-api.html",
        f"  Admin         {server.url}/admin/",
        f"  Dashboard     {server.url}/admin/dashboard/",
        f"  API docs      {server.url}/api/docs/",
        f"  Local engine  http://127.0.0.1:{engine_port}/v1",
        f"  Local SIP     sip:proj_local@127.0.0.1:{sip_port} (UDP and TCP)",
        "  Time zone     America/Montreal",
    ]
    # The access log's lines are in that time zone too, with their offset (-05:00 or -04:00).
    assert re.search(
        r'^127\.0\.0\.1:\d+ - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d -0[45]00\] "GET /api/realtime/stats" 200 \d+$', "\n".join(lines), re.M
    )


def test_it_names_localhost_for_a_wildcard_address_and_no_engine_when_openai_serves(settings):
    from realtime.management.commands.serve import banner

    settings.TIME_ZONE = "Europe/Paris"

    assert banner("0.0.0.0", 8000, engine=None).splitlines() == [
        "Ready:",
        "  Demo page  http://localhost:8000/realtime-api.html",
        "  Admin      http://localhost:8000/admin/",
        "  Dashboard  http://localhost:8000/admin/dashboard/",
        "  API docs   http://localhost:8000/api/docs/",
        "  Time zone  Europe/Paris",
    ]
    assert banner("::1", 8000, engine=("::1", 8001)).splitlines()[1:6:4] == [
        "  Demo page     http://[::1]:8000/realtime-api.html",
        "  Local engine  http://[::1]:8001/v1",
    ]


def test_it_shows_every_screenshot_it_references_and_references_every_one_taken():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    images = re.findall(r"!\[([^\]]*)\]\(([^)]+)\)", readme)

    referenced = {path for _, path in images}
    assert [path for path in sorted(referenced) if not (ROOT / path).is_file()] == []
    # Every image has words for those who cannot see it.
    assert [path for caption, path in images if not caption.strip()] == []
    taken = {f"docs/screenshots/{image.name}" for image in (ROOT / "docs" / "screenshots").glob("*.png")}
    assert taken - referenced == set()
