"""Admin: the call page shows the transcript readably; the list shows cost and sorts by it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from realtime import services
from realtime.models import Call, CallEvent


def _call(call_id: str, cost: Decimal | None) -> Call:
    return Call.objects.create(
        call_id=call_id,
        status=Call.Status.ACTIVE,
        upstream_id=f"rtc_{call_id}",
        model="gpt-realtime",
        voice="marin",
        upstream_model="gpt-realtime",
        sdp_offer="v=0",
        created_at=timezone.now(),
        cost_usd=cost,
    )


@pytest.mark.django_db
def test_it_shows_the_transcript_on_the_call_page(admin_client):
    call = _call("call_a", Decimal("0.012345"))
    user = {"id": "item_u", "type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": None}]}
    assistant = {
        "id": "item_a",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_audio", "transcript": "Bonjour <b>!"}],
    }
    now = timezone.now()
    services.call_record_events(
        call=call,
        events=[
            services.UpstreamEvent("conversation.item.done", "e1", {"item": user}, now),
            services.UpstreamEvent("conversation.item.done", "e2", {"item": assistant}, now),
            services.UpstreamEvent(
                "conversation.item.input_audio_transcription.completed", "e3", {"item_id": "item_u", "transcript": "Allo ?"}, now
            ),
        ],
    )

    services.call_end(call=call, reason=Call.EndReason.REMOTE_HANGUP, actor=CallEvent.Actor.UPSTREAM)
    page = admin_client.get(f"/admin/realtime/call/{call.pk}/change/").content.decode()
    # It should show the timeline (audit trail and sideband events), and link to the sideband events.
    assert 'data-event-type="call.ended"' in page and 'data-event-type="conversation.item.done"' in page
    assert f'<a href="/admin/realtime/callevent/?q={call.call_id}">3 events</a>' in page
    assert '<span class="who">Caller</span>\n          <span class="text">Allo ?</span>' in page
    # It should escape what the model said.
    assert '<span class="who">Assistant</span>\n          <span class="text">Bonjour &lt;b&gt;!</span>' in page


@pytest.mark.django_db
def test_it_lists_calls_by_cost(admin_client):
    # Created dear first: the default order (newest first) would list the cheap one first.
    _call("call_dear", Decimal("0.5"))
    _call("call_cheap", Decimal("0.001"))
    _call("call_unpriced", None)

    page = admin_client.get("/admin/realtime/call/", {"o": "-9"}).content.decode()  # 9th column: cost, descending
    assert page.index("call_dear") < page.index("call_cheap")
    assert "$0.5000" in page and "$0.0010" in page
    page = admin_client.get("/admin/realtime/call/", {"o": "9"}).content.decode()
    assert page.index("call_cheap") < page.index("call_dear")
