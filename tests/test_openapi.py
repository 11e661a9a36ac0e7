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
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance, status_code_conformance

from realtime import services, upstream
from realtime.models import Call, CallEvent
from realtime.webhooks import outbox
from realtime.webhooks import services as webhook_services
from realtime.webhooks.models import TEST_EVENT, EventType, WebhookMessage

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


def test_it_describes_every_outgoing_webhook_with_its_signature_headers_and_payload():
    schema = yaml.safe_load(CHECKED_IN.read_text(encoding="utf-8"))
    components = schema["components"]["schemas"]
    call_ref = schema["paths"]["/api/realtime/calls/{call_id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    call = components[call_ref["$ref"].rsplit("/", 1)[1]]["properties"]["call"]

    assert schema["openapi"] == "3.1.0"  # the version with a root `webhooks` section
    assert list(schema["webhooks"]) == [*EventType.values, TEST_EVENT]
    for event, operations in schema["webhooks"].items():
        assert list(operations) == ["post"], event
        post = operations["post"]
        assert [(p["name"], p["in"], p["required"], p["schema"]["type"]) for p in post["parameters"]] == [
            ("webhook-id", "header", True, "string"),
            ("webhook-timestamp", "header", True, "integer"),
            ("webhook-signature", "header", True, "string"),
        ], event
        assert sorted(post["responses"]) == ["2XX", "default"], event
        body = components[post["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
        assert body["required"] == ["data", "timestamp", "type"], event
        assert body["properties"]["type"]["enum"] == [event]
        assert body["properties"]["timestamp"]["type"] == "integer"
        data = body["properties"]["data"]
        if event == TEST_EVENT:
            assert components[data["$ref"].rsplit("/", 1)[1]]["required"] == ["events", "url", "webhook_id"]
        elif event == EventType.CALL_TRANSCRIPT_COMPLETED:
            with_transcript = components[data["$ref"].rsplit("/", 1)[1]]
            assert set(with_transcript["properties"]) == set(components["Call"]["properties"]) | {"transcript"}
            assert with_transcript["properties"]["transcript"]["items"] == {"$ref": "#/components/schemas/TranscriptEntry"}
        else:
            assert data == call == {"$ref": "#/components/schemas/Call"}, event  # the call as GET …/calls/{id} shows it


@pytest.mark.django_db
def test_it_describes_the_payloads_we_really_send(make_call):
    # OpenAPI 3.1's schema objects are JSON Schema 2020-12: the payloads the outbox wrote must validate.
    schema = yaml.safe_load(CHECKED_IN.read_text(encoding="utf-8"))
    endpoint = webhook_services.endpoint_create(url="https://example.com/hooks", events=list(EventType.values), api_key=None)
    call = make_call()  # created: not answered yet, so `answered_at` and `ended_at` are null
    services.call_answer(call=call, created=upstream.CreatedCall(upstream_id="rtc_1", sdp_answer="v=0"))
    item = {"id": "item_1", "type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Bonjour"}]}
    services.call_record_events(
        call=call,
        events=[
            services.UpstreamEvent(event_type="conversation.item.done", event_id="ev_1", data={"item": item}, received_at=timezone.now())
        ],
    )
    services.call_end(call=call, reason=Call.EndReason.API_HANGUP, actor=CallEvent.Actor.API)
    outbox.enqueue_test(endpoint=endpoint, at=timezone.now())

    sent = {message.event_type: message.payload for message in WebhookMessage.objects.all()}
    assert sorted(sent) == ["call.answered", "call.created", "call.ended", "call.transcript.completed", "webhook.test"]
    assert sent["call.created"]["data"]["answered_at"] is None
    for event, payload in sent.items():
        body = schema["webhooks"][event]["post"]["requestBody"]["content"]["application/json"]["schema"]
        validator = Draft202012Validator({**body, "components": schema["components"]})
        assert [error.message for error in validator.iter_errors(payload)] == [], event


def test_it_says_null_the_openapi_3_1_way():
    text = CHECKED_IN.read_text(encoding="utf-8")
    schema = yaml.safe_load(text)

    assert "nullable" not in text
    call = schema["components"]["schemas"]["Call"]["properties"]
    assert [call[name]["type"] for name in ("created_at", "answered_at", "ended_at", "duration_seconds")] == [
        "integer",
        ["integer", "null"],
        ["integer", "null"],
        ["integer", "null"],
    ]


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
    for page in (swagger, redoc):
        # The pages style themselves at run time; their scripts are still our own files only.
        policy = page.headers["Content-Security-Policy"]
        assert "style-src 'self' 'unsafe-inline';" in policy and "script-src 'self';" in policy
    assert "googleapis" not in redoc.content.decode()
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
