"""A corpus of malformed requests against the real endpoints: every answer is a 4xx in the error
shape, and the database is exactly as it was. Upstream points at a closed port, so a request that
slipped through validation would fail loudly (a 502 and a `failed` call) instead of passing.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from realtime.models import ApiKey, Call, CallEvent

INJECTIONS = [
    "' OR '1'='1",
    "'; DROP TABLE realtime_call; --",
    '" OR ""="',
    "1; SELECT * FROM auth_user",
    "1 UNION SELECT password FROM auth_user--",
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",
    "{{7*7}}",
    "${jndi:ldap://example.test/a}",
    "../../../../etc/passwd",
    "%00",
    "\x00",
    "\x1b[31mred",
    "\ud800",
    "a" * 5000,
    "é" * 3000,
    "\u202etxt.exe",
]
HUGE = "x" * 300_000


@dataclass
class Bad:
    label: str
    method: str
    path: str
    body: Any = None
    content_type: str | None = None
    format: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _form(values: dict[str, Any]) -> str:
    # surrogatepass: send a lone surrogate as the raw bytes an attacker could put on the wire.
    return urlencode(values, errors="surrogatepass")


def _json(label: str, body: Any, path: str = "/api/realtime/calls") -> Bad:
    return Bad(label, "POST", path, json.dumps(body), "application/json")


def _raw(label: str, body: str | bytes, content_type: str = "application/json") -> Bad:
    return Bad(label, "POST", "/api/realtime/calls", body, content_type)


def corpus(offer: str, call_id: str) -> list[Bad]:
    bad_sdp = "v=0\r\nm=video 9 RTP/AVP 0\r\n"
    cases: list[Bad] = []

    # Broken JSON.
    for i, text in enumerate(
        [
            '{"sdp": ',
            "{",
            "[",
            "nul",
            '{"sdp": "v=0",}',
            "{'sdp': 'v=0'}",
            '{"sdp": NaN}',
            '{"sdp": Infinity}',
            '{"sdp": "v=0" "session": {}}',
            "\x00",
            '{"sdp": "\\ud800"}',
            '{"sdp": "\\x41"}',
            "[" * 100_000,
            '{"a":' * 50_000,
            "\xff\xfe{}",
            "",
        ]
    ):
        cases.append(_raw(f"broken json {i}", text))
    cases.append(_raw("not utf-8", b'{"sdp": "\xff\xfe"}'))

    # Wrong types, at the top and in each field.
    for i, body in enumerate([[], [offer], "v=0", 42, None, True, {"sdp": None}, {}]):
        cases.append(_json(f"body type {i}", body))
    for i, value in enumerate([42, 4.2, True, None, [offer], {"v": 0}, ""]):
        cases.append(_json(f"sdp type {i}", {"sdp": value}))
    for i, value in enumerate([42, True, [1], "not json", "[]", '"x"', "{"]):
        cases.append(_json(f"session type {i}", {"sdp": offer, "session": value}))
    typed_fields = {
        "model": [42, None, ["gpt-realtime"], {"id": "x"}],
        "voice": [1, True, ["alloy"], {"id": 1}],
        "modalities": ["audio", [1], [None], {"a": 1}, ["text", "text"]],
        "temperature": ["0.8", None, [0.8], True, float("1e308") * 0 + 5, -1],
        "max_response_output_tokens": ["100", 1.5, -1, 10**30, True],
        "instructions": [42, ["hi"], {"t": 1}, True],
        "audio": ["x", [1], {"output": "marin"}, {"output": {"voice": 7}}, {"input": {"format": {"type": ["audio/pcm"]}}}],
        "turn_detection": ["server_vad", {"type": {}}, {"type": "server_vad", "threshold": "high"}],
        "tools": ["x", [1], [{"type": "function"}], [{"type": []}]],
        "tool_choice": [1, {"type": {}}, ["auto"]],
        "output_modalities": [["audio", "text"], "audio", [None]],
    }
    for name, values in typed_fields.items():
        for i, value in enumerate(values):
            cases.append(_json(f"session.{name} type {i}", {"sdp": offer, "session": {name: value}}))

    # Huge values.
    cases.append(_json("huge body", {"sdp": offer, "session": {"instructions": HUGE}}))
    cases.append(_json("huge sdp", {"sdp": offer + "a=x:" + "y" * 70_000 + "\r\n"}))
    cases.append(_json("huge instructions", {"sdp": offer, "session": {"instructions": "i" * 40_000}}))
    cases.append(_json("huge key", {"sdp": offer, "k" * 10_000: 1}))
    cases.append(_json("huge voice", {"sdp": offer, "session": {"voice": "v" * 100_000}}))
    cases.append(_json("huge list", {"sdp": offer, "session": {"tools": [{}] * 5000}}))
    cases.append(_raw("huge multipart", HUGE, "multipart/form-data; boundary=xyz"))

    # Control characters.
    for i, char in enumerate(["\x00", "\x01", "\x1b", "\x7f", "\u2028", "\ud800"]):
        cases.append(_json(f"control in sdp {i}", {"sdp": offer.replace("s=-", f"s=-{char}\n\x00")}))
        cases.append(_json(f"control in voice {i}", {"sdp": offer, "session": {"voice": f"alloy{char}"}}))
        cases.append(_json(f"control in instructions {i}", {"sdp": offer, "session": {"instructions": f"hi{char}\x00"}}))

    # Injection strings in every field (free-text fields paired with a bad offer, so only they vary).
    for i, value in enumerate(INJECTIONS):
        cases.append(_json(f"injection sdp {i}", {"sdp": value}))
        cases.append(_json(f"injection sdp body {i}", {"sdp": f"v=0\r\no=- {value}\r\n"}))
        cases.append(_json(f"injection model {i}", {"sdp": offer, "session": {"model": value}}))
        cases.append(_json(f"injection voice {i}", {"sdp": offer, "session": {"voice": value}}))
        cases.append(_json(f"injection type {i}", {"sdp": offer, "session": {"type": value}}))
        cases.append(_json(f"injection modalities {i}", {"sdp": offer, "session": {"modalities": [value]}}))
        cases.append(_json(f"injection format {i}", {"sdp": offer, "session": {"input_audio_format": value}}))
        cases.append(_json(f"injection ga voice {i}", {"sdp": offer, "session": {"audio": {"output": {"voice": value}}}}))
        cases.append(_json(f"injection instructions {i}", {"sdp": bad_sdp, "session": {"instructions": value}}))
        cases.append(_json(f"injection session key {i}", {"sdp": offer, "session": {value: 1}}))
        cases.append(_json(f"injection top key {i}", {"sdp": offer, value: 1}))
        if value.isascii() or "\ud800" not in value:
            # (A multipart body cannot carry a lone surrogate as text; the %-encoded forms below do.)
            cases.append(Bad(f"injection multipart sdp {i}", "POST", "/api/realtime/calls", {"sdp": value}, format="multipart"))
            cases.append(
                Bad(f"injection multipart session {i}", "POST", "/api/realtime/calls", {"sdp": offer, "session": value}, format="multipart")
            )
        cases.append(
            Bad(f"injection form sdp {i}", "POST", "/api/realtime/calls", _form({"sdp": value}), "application/x-www-form-urlencoded")
        )
        # Query parameters: each one, on the list and on a call's events.
        for name in ("limit", "offset", "status"):
            cases.append(Bad(f"injection list {name} {i}", "GET", f"/api/realtime/calls?{_form({name: value})}"))
        for name in ("limit", "offset"):
            cases.append(Bad(f"injection events {name} {i}", "GET", f"/api/realtime/calls/{call_id}/events?{_form({name: value})}"))
        cases.append(
            Bad(f"injection events type {i}", "GET", f"/api/realtime/calls/{call_id}/events?{_form({'event_type': value, 'limit': 0})}")
        )
        # Ids in paths.
        encoded = quote(value, safe="", errors="surrogatepass")
        cases.append(Bad(f"injection get id {i}", "GET", f"/api/realtime/calls/{encoded}"))
        cases.append(Bad(f"injection delete id {i}", "DELETE", f"/api/realtime/calls/{encoded}"))
        cases.append(Bad(f"injection events id {i}", "GET", f"/api/realtime/calls/{encoded}/events"))

    # Upload oddities.
    cases.append(
        Bad("sdp file not utf-8", "POST", "/api/realtime/calls", {"sdp": SimpleUploadedFile("o.sdp", b"\xff\xfe\x00")}, format="multipart")
    )
    cases.append(
        Bad(
            "sdp file too big",
            "POST",
            "/api/realtime/calls",
            {"sdp": SimpleUploadedFile("o.sdp", b"v=0\r\n" + b"a" * 70_000)},
            format="multipart",
        )
    )
    cases.append(
        Bad(
            "session file bad",
            "POST",
            "/api/realtime/calls",
            {"sdp": offer, "session": SimpleUploadedFile("s.json", b"\xff{")},
            format="multipart",
        )
    )
    cases.append(_raw("multipart without boundary", "--x\r\n", "multipart/form-data"))

    # Content types and methods.
    for i, content_type in enumerate(["text/plain", "application/xml", "application/sdp", "image/png", "application/x-json", "text/html"]):
        cases.append(_raw(f"content type {i}", offer, content_type))
    for i, (method, path) in enumerate(
        [
            ("PUT", "/api/realtime/calls"),
            ("PATCH", f"/api/realtime/calls/{call_id}"),
            ("POST", "/api/realtime/stats"),
            ("DELETE", "/api/realtime/calls"),
        ]
    ):
        cases.append(Bad(f"method {i}", method, path, "{}", "application/json"))
    for i, query in enumerate(["limit=-1", "limit=0", "offset=-5", "limit=1.5", "limit=1e3", "status=ACTIVE", "status=%00", "limit=0x10"]):
        cases.append(Bad(f"list query {i}", "GET", f"/api/realtime/calls?{query}"))

    # Free-form objects (forwarded upstream as given): lone surrogates, NaN and infinities, depth.
    def deep(levels: int) -> dict[str, Any]:
        value: dict[str, Any] = {}
        for _ in range(levels):
            value = {"a": value}
        return value

    def free_form(value: Any) -> list[tuple[str, dict[str, Any]]]:
        return [
            ("tools.parameters", {"tools": [{"type": "function", "name": "f", "parameters": {"x": value}}]}),
            ("tracing.metadata", {"tracing": {"workflow_name": "w", "metadata": {"x": value}}}),
            ("prompt.variables", {"prompt": {"id": "p", "variables": {"x": value}}}),
            ("mcp headers", {"tools": [{"type": "mcp", "server_label": "s", "headers": {"x": value}}]}),
            ("mcp allowed_tools", {"tools": [{"type": "mcp", "server_label": "s", "allowed_tools": {"x": value}}]}),
            ("mcp require_approval", {"tools": [{"type": "mcp", "server_label": "s", "require_approval": {"x": value}}]}),
        ]

    for bad_value, what in [("\ud800", "surrogate"), ("a\udfffb", "low surrogate"), ({"\ud800": 1}, "surrogate key")]:
        for where, session in free_form(bad_value):
            cases.append(_json(f"{what} in {where}", {"sdp": offer, "session": session}))
    for levels in (40, 500, 900):
        for where, session in free_form(deep(levels)):
            cases.append(_json(f"{levels} deep in {where}", {"sdp": offer, "session": session}))
    for constant in ("NaN", "Infinity", "-Infinity"):
        for where, session in free_form("CONSTANT"):
            text = json.dumps(session).replace('"CONSTANT"', constant)
            cases.append(
                Bad(f"{constant} in multipart {where}", "POST", "/api/realtime/calls", {"sdp": offer, "session": text}, format="multipart")
            )
        cases.append(
            Bad(
                f"{constant} multipart temperature",
                "POST",
                "/api/realtime/calls",
                {"sdp": offer, "session": f'{{"temperature": {constant}}}'},
                format="multipart",
            )
        )

    # Django's caps on form bodies: fields and files.
    many_fields = {"sdp": offer, **{f"f{i}": "x" for i in range(1100)}}
    cases.append(Bad("1,100 multipart fields", "POST", "/api/realtime/calls", many_fields, format="multipart"))
    many_files = {"sdp": offer, **{f"f{i}": SimpleUploadedFile(f"{i}.txt", b"x") for i in range(101)}}
    cases.append(Bad("101 multipart files", "POST", "/api/realtime/calls", many_files, format="multipart"))

    # Windows past any table (and past the database's integers).
    for name in ("offset", "limit"):
        for value in ("1" + "0" * 21, str(2**63), str(10**12 + 1)):
            cases.append(Bad(f"list {name}={value}", "GET", f"/api/realtime/calls?{name}={value}"))
            cases.append(Bad(f"events {name}={value}", "GET", f"/api/realtime/calls/{call_id}/events?{name}={value}"))

    # Credentials that are not ones.
    for i, header in enumerate(["Bearer ", "Bearer \x00", "Bearer iap_' OR 1=1 --", "Bearer " + "k" * 10_000, "Bearer iap_<script>"]):
        cases.append(Bad(f"bad key {i}", "GET", "/api/realtime/calls", headers={"HTTP_AUTHORIZATION": header}))
    return cases


def _snapshot() -> list[Any]:
    return [list(Call.objects.order_by("pk").values()), list(CallEvent.objects.order_by("pk").values()), list(ApiKey.objects.values())]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db
def test_it_answers_every_malformed_request_with_a_4xx_and_changes_nothing(settings, sdp_offer, make_call, make_key):
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{_closed_port()}/v1"
    settings.REALTIME_THROTTLE_RATES = {"api_key": None, "anonymous": None, "staff": None}
    existing = make_call()
    make_key("bystander")
    before = _snapshot()
    requests = corpus(sdp_offer, existing.call_id)
    assert len(requests) >= 200
    client = APIClient(raise_request_exception=False)

    failures = []
    for bad in requests:
        if bad.format:
            response = getattr(client, bad.method.lower())(bad.path, bad.body, format=bad.format, **bad.headers)
        else:
            body = bad.body if bad.body is not None else ""
            response = client.generic(
                bad.method, bad.path, body, content_type=bad.content_type or "application/octet-stream", **bad.headers
            )
        problem = _problem(response)
        if problem:
            failures.append(f"{bad.label}: {problem}")

    assert failures == [], "\n".join(failures)
    assert _snapshot() == before


def _problem(response: Any) -> str | None:
    if not 400 <= response.status_code < 500:
        return f"status {response.status_code}: {response.content[:300]!r}"
    if not response["Content-Type"].startswith("application/json"):
        return f"content type {response['Content-Type']}"
    body = response.json()
    if set(body) != {"success", "error"} or body["success"] is not False or set(body["error"]) != {"code", "message", "details"}:
        return f"shape {body}"
    if not isinstance(body["error"]["code"], str) or not isinstance(body["error"]["message"], str):
        return f"types {body}"
    return None


@pytest.mark.parametrize("value", INJECTIONS[:12])
@pytest.mark.django_db
def test_it_treats_injection_in_a_free_text_filter_as_plain_text(api, make_call, value):
    call = make_call()

    response = api.get(f"/api/realtime/calls/{call.call_id}/events", {"event_type": value})

    assert response.status_code in (200, 400)
    if response.status_code == 200:
        assert response.json()["data"] == [] and response.json()["count"] == 0
    assert Call.objects.count() == 1 and CallEvent.objects.count() == 1
