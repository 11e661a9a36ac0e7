"""A corpus of malformed requests against the real endpoints: every answer is a 4xx in the error
shape, and the database is exactly as it was. Upstream points at a closed port, so a request that
slipped through validation would fail loudly (a 502 and a `failed` call) instead of passing.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.apps import apps
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from iaposte.asgi import application
from localrealtime.sip.webhook import sign
from realtime.models import ApiKey, Call, CallEvent, SipRoute

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


ROUTE_BAD_VALUES: dict[str, list[Any]] = {
    "name": [None, [], {}, "", "n" * 101, True],
    "position": [-1, "first", 1.5, None, [], {}, 2**63],
    "enabled": ["maybe", 2, [], {}, None],
    "called_pattern": [[], {}, "c" * 256, None],
    "caller_pattern": [[], {}, "c" * 256, None],
    "header_name": ["X Bad", "X:Y", "X\r\nInjected: 1", "<script>", "h" * 101, [], None],
    "header_pattern": [[], {}, "p" * 256, None],
    "action": ["hangup", "", 1, [], None, "ACCEPT"],
    "session": ["not json", 42, [1], {"voice": 7}, {"modalities": "audio"}, {"turn_detection": {"threshold": 0.5}}, {"nope": 1}],
    "reject_status": [200, 299, 700, -1, "busy", 1.5, 10**6, None],
}
NOT_SIP_URIS = ["http://example.com", "mailto:a@b.c", "sip:", "tel:", "sip:@example.com", "sip:<a>@b", 'sip:"a"@b', "sip:a@b\r\nX: 1"]


def other_endpoints(offer: str, call_id: str, route_id: int) -> list[Bad]:
    """Every REST endpoint besides the create: transfers, SIP routes, methods, paths, hosts."""
    cases: list[Bad] = []
    transfer = f"/api/realtime/calls/{call_id}/transfer"
    for i, value in enumerate([*INJECTIONS, *NOT_SIP_URIS, 42, None, [], {}, True, "", "sip:" + "a" * 300 + "@b"]):
        cases.append(_json(f"transfer target {i}", {"target_uri": value}, transfer))
    for i, body in enumerate([{}, [], "sip:a@b", {"target": "sip:a@b"}, {"target_uri": "x", "extra": 1}]):
        cases.append(_json(f"transfer body {i}", body, transfer))
    for i, text in enumerate(["{", "[", "", "\x00", '{"target_uri": NaN}']):
        cases.append(Bad(f"transfer broken json {i}", "POST", transfer, text, "application/json"))
    for i, content_type in enumerate(["text/plain", "application/x-www-form-urlencoded", "application/xml"]):
        cases.append(Bad(f"transfer content type {i}", "POST", transfer, "target_uri=sip:a@b", content_type))

    # SIP routes: each field wrong, on a new route and on an existing one.
    for name, values in ROUTE_BAD_VALUES.items():
        for i, value in enumerate(values):
            body = {"name": "r", name: value}
            cases.append(_json(f"route {name} {i}", body, "/api/realtime/sip/routes"))
            cases.append(
                Bad(f"route patch {name} {i}", "PATCH", f"/api/realtime/sip/routes/{route_id}", json.dumps(body), "application/json")
            )
    for i, text in enumerate(["{", "[]", "", "null", '"r"', "42", "[" * 10_000]):
        cases.append(Bad(f"route broken body {i}", "POST", "/api/realtime/sip/routes", text, "application/json"))
        if text:  # (an empty PATCH changes nothing, and says so with a 200)
            cases.append(Bad(f"route patch broken body {i}", "PATCH", f"/api/realtime/sip/routes/{route_id}", text, "application/json"))
    for i, value in enumerate(INJECTIONS):
        encoded = quote(value, safe="", errors="surrogatepass")
        cases.append(Bad(f"route id {i}", "GET", f"/api/realtime/sip/routes/{encoded}"))
        cases.append(Bad(f"route delete id {i}", "DELETE", f"/api/realtime/sip/routes/{encoded}"))
        cases.append(Bad(f"transcript id {i}", "GET", f"/api/realtime/calls/{encoded}/transcript"))
        cases.append(_json(f"transfer id {i}", {"target_uri": "sip:a@b"}, f"/api/realtime/calls/{encoded}/transfer"))
    for i, route in enumerate(["0", "-1", str(2**63), "1.5", "1e3", "99999999"]):
        cases.append(Bad(f"route number {i}", "GET", f"/api/realtime/sip/routes/{route}"))
        cases.append(Bad(f"route patch number {i}", "PATCH", f"/api/realtime/sip/routes/{route}", '{"name": "r"}', "application/json"))

    # Methods each endpoint does not take.
    endpoints = {
        "/api/realtime/calls": ["PUT", "PATCH", "DELETE"],
        f"/api/realtime/calls/{call_id}": ["PUT", "PATCH", "POST"],
        f"/api/realtime/calls/{call_id}/events": ["POST", "PUT", "PATCH", "DELETE"],
        f"/api/realtime/calls/{call_id}/transcript": ["POST", "PUT", "PATCH", "DELETE"],
        transfer: ["GET", "PUT", "PATCH", "DELETE"],
        "/api/realtime/stats": ["POST", "PUT", "PATCH", "DELETE"],
        "/api/realtime/models": ["POST", "PUT", "PATCH", "DELETE"],
        "/api/realtime/health": ["POST", "PUT", "PATCH", "DELETE"],
        "/api/realtime/sip/routes": ["PUT", "PATCH", "DELETE"],
        f"/api/realtime/sip/routes/{route_id}": ["POST", "PUT"],
        "/api/realtime/sip/webhook": ["GET", "PUT", "PATCH", "DELETE"],
    }
    for path, methods in endpoints.items():
        for method in methods:
            cases.append(Bad(f"{method} {path}", method, path, "{}", "application/json"))

    # Paths that do not exist under the API.
    for i, path in enumerate(
        [
            "/api/realtime/",
            "/api/realtime/call",
            "/api/realtime/calls/a/b/c",
            f"/api/realtime/calls/{call_id}/nope",
            f"/api/realtime/calls/{call_id}/events/1",
            "/api/realtime/sip",
            "/api/realtime/sip/routes/1/x",
            "/api/realtime/sip/webhooks",
            "/api/realtime/stats/1",
            "/api/realtime/models/gpt-realtime",
            "/api/realtime/health/x",
            "/api/realtime/%00",
            "/api/realtime/..%2f..%2fetc%2fpasswd",
            "/api/realtime/calls/%2e%2e",
            "/api/realtime/" + "a" * 3000,
            "/api/realtime/calls/" + "%ff" * 10,
        ]
    ):
        cases.append(Bad(f"unknown path {i}", "GET", path))
        cases.append(Bad(f"unknown path post {i}", "POST", path, "{}", "application/json"))

    # A Host outside ALLOWED_HOSTS, on every endpoint.
    paths = list(endpoints)
    for i, host in enumerate(["rebind.attacker.example", "localhost:5000@evil.example", "[::1", "a" * 300, "localhost:80:80"]):
        for path in paths:
            cases.append(Bad(f"bad host {i} {path}", "GET", path, headers={"HTTP_HOST": host}))
    cases.append(_json("bad host create", {"sdp": offer}, "/api/realtime/calls"))
    cases[-1].headers = {"HTTP_HOST": "rebind.attacker.example"}

    # Idempotency keys that are not ones.
    for i, key in enumerate(["", " ", "k" * 300, "a\x00b", "\u00e9t\u00e9", "a b"]):
        cases.append(Bad(f"idempotency key {i}", "POST", "/api/realtime/calls", json.dumps({"sdp": "v=0"}), "application/json"))
        cases[-1].headers = {"HTTP_IDEMPOTENCY_KEY": key}
    return cases


WEBHOOK_SECRET = "whsec_" + "Y29ycHVzLW9mLWJhZC13ZWJob29rcy1zZWNyZXQ="


def webhooks() -> list[Bad]:
    """OpenAI's SIP webhook: unsigned, badly signed, stale, oversized, and signed but malformed."""
    path = "/api/realtime/sip/webhook"
    event = {
        "object": "event",
        "id": "evt_1",
        "type": "realtime.call.incoming",
        "created_at": 1,
        "data": {"call_id": "rtc_1", "sip_headers": []},
    }
    body = json.dumps(event).encode()
    now = int(time.time())
    cases: list[Bad] = []

    def post(label: str, data: bytes, headers: dict[str, str]) -> None:
        cases.append(
            Bad(
                label,
                "POST",
                path,
                data,
                "application/json",
                headers={f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()},
            )
        )

    def signed(label: str, data: bytes, *, webhook_id: str = "wh_corpus", timestamp: int = now, secret: str = WEBHOOK_SECRET) -> None:
        signature = sign(secret=secret, webhook_id=webhook_id, timestamp=timestamp, body=data)
        post(label, data, {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature})

    good_signature = sign(secret=WEBHOOK_SECRET, webhook_id="wh_corpus", timestamp=now, body=body)
    headers = {"webhook-id": "wh_corpus", "webhook-timestamp": str(now), "webhook-signature": good_signature}
    post("webhook unsigned", body, {})
    for name in headers:
        post(f"webhook without {name}", body, {k: v for k, v in headers.items() if k != name})
    for i, value in enumerate(["", "v1,", "v1,AAAA", "v2," + good_signature[3:], "v1," + "A" * 5000, "v1,\x00", "v1,!!!!"]):
        post(f"webhook signature {i}", body, {**headers, "webhook-signature": value})
    for i, value in enumerate(["", "now", "-1", "1e10", str(now - 3600), str(now + 3600), "9" * 30, "1.5"]):
        post(f"webhook timestamp {i}", body, {**headers, "webhook-timestamp": value})
    for i, value in enumerate(INJECTIONS[:12]):
        post(f"webhook id {i}", body, {**headers, "webhook-id": value.encode("utf-8", "surrogatepass").decode("latin-1")})
    post("webhook body changed after signing", body.replace(b"rtc_1", b"rtc_2"), headers)
    signed("webhook other secret", body, secret="whsec_" + "b3RoZXItc2VjcmV0LW5vdC1vdXJzLWF0LWFsbA==")
    signed("webhook stale", body, timestamp=now - 600)
    signed("webhook from the future", body, timestamp=now + 600)
    post("webhook over the size cap", b'{"x": "' + b"a" * 70_000 + b'"}', headers)

    # Signed, so past the signature: a realtime.call.incoming that is not one.
    for i, data in enumerate(
        [
            b"",
            b"{",
            b"\xff\xfe",
            b"null",
            b"\x00",
            b'{"type": "realtime.call.incoming"}',
            json.dumps({**event, "data": None}).encode(),
            json.dumps({**event, "data": []}).encode(),
            json.dumps({**event, "data": "rtc_1"}).encode(),
            json.dumps({**event, "data": {}}).encode(),
            json.dumps({**event, "data": {"call_id": ""}}).encode(),
            json.dumps({**event, "data": {"sip_headers": []}}).encode(),
            b"[" * 10_000,
        ]
    ):
        signed(f"webhook signed malformed {i}", data, webhook_id=f"wh_corpus_{i}")
    return cases


# Pages (the sign-in pages, the demo page, its translations and language switch) with a client that
# checks CSRF as a browser's requests are checked. Outside /api/ a refusal is Django's own page.
PAGES = ["/accounts/login/", "/admin/login/", "/realtime-api.html", "/jsi18n/", "/i18n/setlang/", "/accounts/logout/"]


def pages() -> list[Bad]:
    cases: list[Bad] = []
    for i, value in enumerate(INJECTIONS):
        form = _form({"username": value, "password": value, "next": value})
        for path in ("/accounts/login/", "/admin/login/"):
            cases.append(Bad(f"login without csrf {i} {path}", "POST", path, form, "application/x-www-form-urlencoded"))
        cases.append(
            Bad(
                f"setlang without csrf {i}",
                "POST",
                "/i18n/setlang/",
                _form({"language": value, "next": value}),
                "application/x-www-form-urlencoded",
            )
        )
    for i, token in enumerate(["", "x", "a" * 64, "\x00" * 32, "<script>"]):
        form = _form({"username": "admin", "password": "x", "csrfmiddlewaretoken": token})
        for path in ("/accounts/login/", "/admin/login/"):
            cases.append(
                Bad(
                    f"login bad csrf {i} {path}",
                    "POST",
                    path,
                    form,
                    "application/x-www-form-urlencoded",
                    headers={"HTTP_COOKIE": f"csrftoken={'b' * 32}"},
                )
            )
    for path in PAGES:
        for method in ("PUT", "PATCH", "DELETE"):
            cases.append(Bad(f"page {method} {path}", method, path, "x=1", "application/x-www-form-urlencoded"))
        for i, host in enumerate(["rebind.attacker.example", "[::1", "a" * 300]):
            cases.append(Bad(f"page bad host {i} {path}", "GET", path, headers={"HTTP_HOST": host}))
    for i, path in enumerate(
        [
            "/realtime-api.htm",
            "/realtime-api.html/x",
            "/accounts/login/x",
            "/accounts/",
            "/jsi18n/x",
            "/ws/realtime/calls",
            "/ws/realtime/calls/call_1",
            "/ws/nope",
            "/.env",
            "/wp-login.php",
            "/%00",
            "/..%2f..%2fetc%2fpasswd",
        ]
    ):
        cases.append(Bad(f"page unknown path {i}", "GET", path))
    return cases


# WebSocket upgrades (the project's whole ASGI stack, in process): each is refused at the handshake.
WS_HOST = "localhost:5000"


def sockets() -> list[tuple[str, str, dict[str, str], list[str], str]]:
    """(label, path, headers, subprotocols, client address)."""
    cases: list[tuple[str, str, dict[str, str], list[str], str]] = []
    feed = "/ws/realtime/calls"
    for i, value in enumerate(INJECTIONS):
        encoded = quote(value, safe="", errors="surrogatepass")
        cases.append((f"socket call id {i}", f"{feed}/{encoded}", {}, [], "127.0.0.1"))
        cases.append((f"socket path {i}", f"/ws/{encoded}", {}, [], "127.0.0.1"))
    for i, path in enumerate(
        ["/", "/ws", "/ws/realtime", "/ws/realtime/call", f"{feed}/a/b", f"{feed}//", "/api/realtime/calls", "/admin/"]
    ):
        cases.append((f"socket unknown path {i}", path, {}, [], "127.0.0.1"))
    for i, call_id in enumerate(["call_doesnotexist", "call_" + "a" * 35, "x", "0"]):
        cases.append((f"socket unknown call {i}", f"{feed}/{call_id}", {}, [], "127.0.0.1"))
    for path in (feed, f"{feed}/call_doesnotexist"):
        for i, origin in enumerate(
            ["http://evil.example", "null", "http://localhost:5000.evil.example", "file://", "https://rebind.attacker.example"]
        ):
            cases.append((f"socket origin {i} {path}", path, {"origin": origin}, [], "127.0.0.1"))
        for i, host in enumerate(["rebind.attacker.example", "localhost:5000@evil.example", "a" * 300]):
            cases.append((f"socket host {i} {path}", path, {"host": host, "origin": f"http://{host}"}, [], "127.0.0.1"))
        for i, header in enumerate(
            ["Bearer iap_bad", "Bearer ", "Bearer iap_" + "x" * 40, "Bearer " + "k" * 5000, "Bearer iap_' OR 1=1 --"]
        ):
            cases.append((f"socket key {i} {path}", path, {"authorization": header}, [], "127.0.0.1"))
        for i, offered in enumerate([["iaposte.realtime", "bearer.iap_bad"], ["bearer."], ["iaposte.realtime", "bearer." + "k" * 5000]]):
            cases.append((f"socket subprotocol key {i} {path}", path, {}, offered, "127.0.0.1"))
        for i, client in enumerate(["203.0.113.9", "10.0.0.1", "::ffff:8.8.8.8"]):
            cases.append((f"socket remote anonymous {i} {path}", path, {}, [], client))
    return cases


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_refuses_every_malformed_websocket_upgrade_and_changes_nothing(caplog):
    caplog.set_level(logging.WARNING)
    before = await database_sync_to_async(_snapshot)()

    failures = []
    for label, path, headers, subprotocols, client in sockets():
        all_headers = {"host": WS_HOST, "origin": f"http://{WS_HOST}", **headers}
        communicator = WebsocketCommunicator(
            application, path, headers=[(k.encode(), v.encode()) for k, v in all_headers.items()], subprotocols=subprotocols
        )
        communicator.scope["client"] = [client, 50123]
        try:
            connected, _detail = await communicator.connect(timeout=10)
        except Exception as exc:  # what the server would answer with a 500
            failures.append(f"{label}: {exc!r}")
            continue
        if connected:
            failures.append(f"{label}: accepted")
        await communicator.disconnect()

    assert failures == [], "\n".join(failures)
    assert await database_sync_to_async(_snapshot)() == before
    assert _errors_logged(caplog) == []


def _snapshot() -> list[Any]:
    tables = (Call, CallEvent, ApiKey, SipRoute)
    return [
        *(list(model.objects.order_by("pk").values()) for model in tables),
        {m._meta.label: m._default_manager.count() for m in apps.get_models()},
    ]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Tracebacks, and errors besides `django.security`'s one line per refused Host header."""
    return [
        f"{r.name}: {r.getMessage()[:200]}"
        for r in caplog.records
        if r.exc_info or (r.levelno >= logging.ERROR and not r.name.startswith("django.security"))
    ]


def _send(client: Any, bad: Bad) -> Any:
    if bad.format:
        return getattr(client, bad.method.lower())(bad.path, bad.body, format=bad.format, **bad.headers)
    body = bad.body if bad.body is not None else ""
    return client.generic(bad.method, bad.path, body, content_type=bad.content_type or "application/octet-stream", **bad.headers)


@pytest.mark.django_db
def test_it_answers_every_malformed_request_with_a_4xx_and_changes_nothing(settings, sdp_offer, make_call, make_key, caplog):
    caplog.set_level(logging.WARNING)
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{_closed_port()}/v1"
    settings.REALTIME_THROTTLE_RATES = {"api_key": None, "anonymous": None, "staff": None}
    settings.OPENAI_WEBHOOK_SECRETS = [WEBHOOK_SECRET]
    existing = make_call()
    make_key("bystander")
    route = SipRoute.objects.create(name="bystander", called_pattern="+33*")
    before = _snapshot()
    api_requests = [*corpus(sdp_offer, existing.call_id), *other_endpoints(sdp_offer, existing.call_id, route.pk), *webhooks()]
    page_requests = pages()
    labels = [bad.label for bad in [*api_requests, *page_requests]] + [label for label, *_ in sockets()]
    assert len(labels) == len(set(labels)) >= 1000
    api = APIClient(raise_request_exception=False)
    browser = Client(enforce_csrf_checks=True, raise_request_exception=False)

    failures = []
    for bad in api_requests:
        problem = _problem(_send(api, bad))
        if problem:
            failures.append(f"{bad.label}: {problem}")
    for bad in page_requests:
        response = _send(browser, bad)
        problem = _problem(response) if bad.path.startswith("/api/") else None
        if not 400 <= response.status_code < 500 or problem:
            failures.append(f"{bad.label}: {problem or f'status {response.status_code}'}")

    assert failures == [], "\n".join(failures)
    assert _snapshot() == before
    assert _errors_logged(caplog) == []


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
