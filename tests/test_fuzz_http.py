"""A fuzzing job over the whole HTTP surface, on the real server (uvicorn), in local and production modes.

Every operation of the checked-in OpenAPI schema (REST and OpenAI's SIP webhook) gets generated
requests, valid and invalid (schemathesis' positive and negative modes, driven by Hypothesis by hand
as in tests/test_openapi.py); the webhook also gets fuzzed bodies *signed* with the server's secret,
so they get past the signature check into its parser. Whatever is sent:

- the answer is a 2xx or a 4xx, never a 5xx or a dropped connection;
- every 4xx is JSON in our one error shape;
- a refused request writes nothing (the row count of every table is unchanged);
- the server logs no traceback and no error.

The suite runs a bounded, repeatable number of cases (FUZZ_EXAMPLES per operation and mode, default 6).
A longer, random run (docs/security.md):
`FUZZ_EXAMPLES=300 .venv/bin/python -m pytest tests/test_fuzz_http.py -p no:xdist -q -s --timeout=0`.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from django.apps import apps
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from localrealtime.sip.webhook import sign

from .conftest import Server, start_server, stop_server

SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))
# The suite's run is the same every time; a longer run asked for by hand explores new cases.
REPEATABLE = "FUZZ_EXAMPLES" not in os.environ
WEBHOOK = "/api/realtime/sip/webhook"
SECRET = "whsec_" + "ZnV6ei1pbmctdGhlLXNpcC13ZWJob29rLXNlY3JldA=="
MODES = {
    "local": {},
    "production": {
        "DEBUG": "false",
        "SECRET_KEY": "tests-fuzzing-production-mode-" + "f0zZ" * 10,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "LOCALREALTIME_API_KEY": "sk-local-private-for-the-fuzz-test",
    },
}


def fuzz_settings() -> settings:
    # No shrinking: each step is a request to a real server; the failing case is reported as found.
    return settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=REPEATABLE,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture(scope="module", params=list(MODES))
def target(request: pytest.FixtureRequest, django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        **MODES[request.param],
        "OPENAI_WEBHOOK_SECRETS": SECRET,
        # Throttles would answer 429 before validation runs; the fuzz wants to reach it.
        "REALTIME_THROTTLE_API_KEY": "",
        "REALTIME_THROTTLE_ANONYMOUS": "",
        "REALTIME_THROTTLE_STAFF": "",
    }
    server = start_server(tmp_path_factory.mktemp(f"fuzz-{request.param}"), extra_env=env)
    yield server
    stop_server(server)


def row_counts() -> dict[str, int]:
    return {model._meta.label: model._default_manager.count() for model in apps.get_models()}


def settle(counts: dict[str, int]) -> dict[str, int]:
    """After an accepted phone call, wait for what it does after its answer (the call's decision)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = row_counts()
        if now == counts:
            break
        counts = now
    return counts


@dataclass
class Fuzz:
    """What every case is checked against, and what was seen."""

    server: Server
    counts: dict[str, int] = field(default_factory=row_counts)
    cases: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def check(self, label: str, status: int, content_type: str, body: bytes, *, works_after: bool = False) -> None:
        self.cases += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        problem = None
        if not (200 <= status < 300 or 400 <= status < 500):
            problem = f"status {status}: {body[:300]!r}"
        elif status >= 400:
            problem = error_shape_problem(content_type, body)
            now = row_counts()
            if now != self.counts:
                changed = {name: (self.counts[name], now[name]) for name in now if now[name] != self.counts.get(name)}
                problem = problem or f"a refused request ({status}) wrote rows: {changed}"
                self.counts = now
        else:
            self.counts = settle(row_counts()) if works_after else row_counts()
        if problem:
            self.failures.append(f"{label}: {problem}")
            raise AssertionError(f"{label}: {problem}")


def error_shape_problem(content_type: str, body: bytes) -> str | None:
    if not content_type.startswith("application/json"):
        return f"content type {content_type!r}: {body[:200]!r}"
    try:
        answer = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:200]!r}"
    if not isinstance(answer, dict) or set(answer) != {"success", "error"} or answer["success"] is not False:
        return f"shape {answer!r}"
    error = answer["error"]
    if not isinstance(error, dict) or set(error) != {"code", "message", "details"}:
        return f"error shape {answer!r}"
    if not isinstance(error["code"], str) or not isinstance(error["message"], str):
        return f"error types {answer!r}"
    return None


def run_operations(fuzz: Fuzz, headers: dict[str, str], only: Callable[[str], bool]) -> int:
    """Every operation of the schema that `only` keeps, in both generation modes; returns how many."""
    schema = schemathesis.openapi.from_path(SCHEMA)
    schema.config.update(base_url=fuzz.server.url)
    session = requests.Session()
    operations = 0
    for loaded in schema.get_all_operations():
        operation = loaded.ok()
        if not only(operation.path):
            continue
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if negatable(operation) else (GenerationMode.POSITIVE,):
            gather(fuzz, f"{mode.value} {operation.label}", operation_test(fuzz, operation, mode, session, headers))
    return operations


def negatable(operation: Any) -> bool:
    """Whether negative mode can get anything wrong: a path's free text cannot be (Hypothesis would
    search a while before giving up); positive mode already sends any text there."""
    if len(operation.query) or len(operation.body) or len(operation.headers):
        return True
    return any(p.definition["schema"].get("type") != "string" for p in operation.path_parameters)


def operation_test(
    fuzz: Fuzz, operation: Any, mode: GenerationMode, session: requests.Session, headers: dict[str, str]
) -> Callable[[], None]:
    label = f"{mode.value} {operation.label}"

    @given(case=operation.as_strategy(generation_mode=mode))
    @fuzz_settings()
    def exercise(case: Any) -> None:
        try:
            response = case.call(session=session, headers=headers, timeout=30)
        except (ValueError, UnicodeError):
            # Refused by the client library itself (a header it cannot send): never reached us.
            reject()
        content_type = response.headers.get("content-type", [""])[0]
        fuzz.check(f"{label} {case.path_parameters} {case.query} {case.body!r:.300}", response.status_code, content_type, response.content)

    return exercise


def gather(fuzz: Fuzz, label: str, run: Callable[[], None]) -> None:
    """Run a Hypothesis test, keeping its failure (every operation is tried, every failure reported)."""
    seen = len(fuzz.failures)
    try:
        run()
    except Exception as exc:
        if len(fuzz.failures) == seen:  # not one of `check`'s: a failed request, or Hypothesis itself
            fuzz.failures.append(f"{label}: {exc!r}")


def logged_errors(server: Server, start: int) -> list[str]:
    """The server's log records since `start` at ERROR or above, and any traceback."""
    lines = server.log.read_text(errors="replace")[start:].splitlines()
    return [line for line in lines if line.startswith("Traceback") or re.match(r"\S+ \S+ (ERROR|CRITICAL) ", line)]


@pytest.mark.django_db(transaction=True)
def test_it_answers_fuzzed_rest_requests_with_a_2xx_or_a_4xx_in_our_shape_and_writes_nothing_refused(target, make_key):
    _key, raw = make_key("fuzz")
    start = len(target.log.read_text(errors="replace"))
    fuzz = Fuzz(target)

    # Production mode: with a key (to reach validation) and without one; local mode: anonymous, from loopback.
    operations = run_operations(fuzz, {"Authorization": f"Bearer {raw}"}, lambda path: path != WEBHOOK)
    run_operations(fuzz, {}, lambda path: path != WEBHOOK)

    print(f"\n{target.url}: {fuzz.cases} REST cases over {operations} operations, statuses {sorted(fuzz.statuses.items())}")
    assert fuzz.failures == [], "\n".join(fuzz.failures)
    assert operations >= 14 and fuzz.cases >= operations * 2 * 2
    assert logged_errors(target, start) == []


# Bodies for the webhook past its signature: JSON of every kind, the event's shape with fuzzed
# parts, and raw bytes.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4),
    max_leaves=20,
)
sip_headers = st.lists(st.fixed_dictionaries({"name": json_values, "value": json_values}) | json_values, max_size=6) | json_values
events = st.fixed_dictionaries(
    {"type": st.sampled_from(["realtime.call.incoming", "realtime.call.other"]) | json_values},
    optional={
        "object": st.just("event") | json_values,
        "id": st.text(max_size=40) | json_values,
        "created_at": st.integers() | json_values,
        "data": st.fixed_dictionaries({}, optional={"call_id": st.text(max_size=120) | json_values, "sip_headers": sip_headers})
        | json_values,
    },
)
webhook_bodies = events.map(lambda event: json.dumps(event).encode()) | json_values.map(lambda v: json.dumps(v).encode()) | st.binary()


@pytest.mark.django_db(transaction=True)
def test_it_answers_fuzzed_sip_webhooks_signed_or_not_with_a_2xx_or_a_4xx_in_our_shape(target):
    start = len(target.log.read_text(errors="replace"))
    fuzz = Fuzz(target)

    # Unsigned or wrongly signed (schemathesis' cases carry made-up signature headers).
    operations = run_operations(fuzz, {}, lambda path: path == WEBHOOK)
    unsigned = fuzz.cases

    # Signed with the server's own secret: past the signature, into the event's parser.
    sent = 0

    @given(body=webhook_bodies, stale=st.booleans())
    @settings(fuzz_settings(), max_examples=EXAMPLES * 10)
    def signed(body: bytes, stale: bool) -> None:
        nonlocal sent
        sent += 1
        webhook_id = f"wh_fuzz_{sent}_{time.monotonic_ns()}"
        timestamp = int(time.time()) - (3600 if stale else 0)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret=SECRET, webhook_id=webhook_id, timestamp=timestamp, body=body),
        }
        response = httpx.post(f"{target.url}{WEBHOOK}", content=body, headers=headers, timeout=30)
        incoming = response.status_code == 200 and response.json().get("result") == "incoming"
        content_type = response.headers.get("Content-Type", "")
        fuzz.check(f"signed {body[:300]!r}", response.status_code, content_type, response.content, works_after=incoming)

    gather(fuzz, "signed webhooks", signed)

    print(f"\n{target.url}: {unsigned} unsigned and {sent} signed webhooks, statuses {sorted(fuzz.statuses.items())}")
    assert fuzz.failures == [], "\n".join(fuzz.failures)
    assert operations == 1 and unsigned >= 2 and sent >= EXAMPLES * 5
    assert logged_errors(target, start) == []
