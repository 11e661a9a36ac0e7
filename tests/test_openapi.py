"""The OpenAPI contract: generated from the code, checked in, served with its docs pages, and
honoured by the real server (schemathesis, a bounded number of examples; needs the test server).

A longer run: `SCHEMATHESIS_EXAMPLES=200 .venv/bin/python -m pytest tests/test_openapi.py -k conforms`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from django.contrib.staticfiles import finders
from django.core.management import call_command
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance, status_code_conformance

CHECKED_IN = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "8"))


def _generated() -> str:
    out = io.StringIO()
    call_command("spectacular", "--lang", "en", "--validate", "--fail-on-warn", stdout=out)
    return out.getvalue()


def test_it_matches_the_checked_in_schema():
    # Regenerate with: DEBUG=true .venv/bin/python manage.py spectacular --lang en --file docs/openapi.yaml --validate
    assert _generated() == CHECKED_IN.read_text(encoding="utf-8")


def test_it_describes_errors_auth_and_the_idempotency_key():
    schema = yaml.safe_load(CHECKED_IN.read_text(encoding="utf-8"))

    assert schema["components"]["securitySchemes"] == {
        "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key (`rtk_…`) made in the admin."},
        "staffSession": {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": "A staff login (with the CSRF token on writes).",
        },
    }
    create = schema["paths"]["/api/realtime/calls"]["post"]
    assert [(p["name"], p["in"]) for p in create["parameters"]] == [("Idempotency-Key", "header")]
    assert create["security"] == [{"apiKey": []}, {"staffSession": []}, {}]
    error_ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            errors = {code: answer for code, answer in operation["responses"].items() if code >= "400"}
            if path == "/api/realtime/health":
                # Its 503 is the health report itself (for load balancers and process managers).
                assert operation["responses"]["503"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Unhealthy"}
                continue
            assert errors, (method, path)
            for code, answer in errors.items():
                assert answer["content"]["application/json"]["schema"] == error_ref, (method, path, code)
    assert create["requestBody"]["content"]["application/json"]["examples"]["SeedQuickStart"]["value"]["session"] == {
        "model": "gpt-4o-realtime-preview",
        "modalities": ["text", "audio"],
        "voice": "alloy",
        "instructions": "Tu es un assistant vocal utile.",
    }


def test_it_describes_the_sip_webhook_with_its_signature_headers_and_body():
    schema = yaml.safe_load(CHECKED_IN.read_text(encoding="utf-8"))
    webhook = schema["paths"]["/api/realtime/sip/webhook"]

    assert list(webhook) == ["post"]
    post = webhook["post"]
    assert [(p["name"], p["in"], p["required"]) for p in post["parameters"]] == [
        ("webhook-id", "header", True),
        ("webhook-signature", "header", True),
        ("webhook-timestamp", "header", True),
    ]
    assert "security" not in post  # no credentials: the signature is the proof
    body = post["requestBody"]["content"]["application/json"]
    assert body["examples"]["IncomingCall"]["value"]["type"] == "realtime.call.incoming"
    incoming = schema["components"]["schemas"]["RealtimeCallIncomingRequest"]
    assert incoming["required"] == ["created_at", "data", "id", "object", "type"]
    assert schema["components"]["schemas"]["RealtimeCallIncomingDataRequest"]["required"] == ["call_id", "sip_headers"]
    assert sorted(post["responses"]) == ["200", "400", "405", "413"]


@pytest.mark.django_db
def test_it_serves_the_schema_and_its_pages_from_our_own_files(client):
    schema = client.get("/api/schema/")
    swagger = client.get("/api/docs/")
    swagger_script = client.get("/api/docs/?script=")
    redoc = client.get("/api/redoc/")

    assert schema.status_code == 200
    assert yaml.safe_load(schema.content)["info"]["title"] == "IAPosteManager Realtime API"
    for page in (swagger, redoc):
        html = page.content.decode()
        assert page.status_code == 200
        assert "/static/drf_spectacular_sidecar/" in html
        assert "cdn" not in html.lower()
    assert swagger_script.status_code == 200
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert finders.find("drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js")


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.django_db(transaction=True)
def test_it_conforms_to_its_schema_on_the_real_server(asgi_server: Any) -> None:
    # Hypothesis driven by hand, one operation at a time: schemathesis' pytest plugin does not load
    # under this pytest, and its engine would be a second runner inside the suite.
    schema = schemathesis.openapi.from_path(CHECKED_IN)
    schema.config.update(base_url=asgi_server.url)
    failures: list[str] = []
    tried = 0
    for loaded in schema.get_all_operations():
        operation = loaded.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
        def exercise(case: Any) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            exercise()
        except Exception as exc:  # gathered: every operation is tried, every failure reported
            failures.append(f"{operation.label}: {exc}")
        tried += 1

    described = yaml.safe_load(CHECKED_IN.read_text(encoding="utf-8"))["paths"]
    assert tried == sum(len(operations) for operations in described.values()) >= 8
    assert failures == []
