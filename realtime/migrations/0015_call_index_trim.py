# Fewer index entries per call transition on PostgreSQL (docs/benchmarks.md, "Index entries per
# transition"): one index for the call id, indexes read for active calls, or for calls with a key,
# a route or an end reason made partial there, and the index of ended calls dropped (whole calls
# past their retention are read from the index of creation).

from typing import Any

import realtime.indexes
import realtime.models
from django.db import migrations, models


class OnPostgreSQL(migrations.SeparateDatabaseAndState):
    """`operations` in the migration state everywhere, in the database on PostgreSQL only.

    SQLite's indexes stay as they were: PostgreSQLPartialIndex gives the same full index there, and
    its call id stays unique through the column's own constraint, which is what `call_id_once`
    is; dropping that would rewrite the whole table (SQLite cannot drop a column constraint),
    every row copied, twice, for the same index."""

    def __init__(self, operations: list[Any]) -> None:
        super().__init__(database_operations=operations, state_operations=operations)

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


def partial(name: str, fields: list[str], condition: models.Q) -> list[Any]:
    return [
        migrations.RemoveIndex(model_name="call", name=name),
        migrations.AddIndex(model_name="call", index=realtime.indexes.PostgreSQLPartialIndex(fields=fields, condition=condition, name=name)),
    ]


ACTIVE = models.Q(status="active")
CLAIMABLE = ACTIVE & ~models.Q(upstream_id="")
WITH_DEADLINE = ACTIVE & models.Q(deadline_at__isnull=False)
IDLE_SINCE = ACTIVE & (models.Q(last_activity_at__isnull=False) | models.Q(answered_at__isnull=False))
WITH_KEY = models.Q(api_key__isnull=False)


class Migration(migrations.Migration):
    dependencies = [
        ("realtime", "0014_call_key_status"),
    ]

    operations = [
        OnPostgreSQL(
            [
                # The call id's unique index, usable for a prefix search too, before the column
                # drops its own unique constraint and the pattern index beside it.
                migrations.AddConstraint(
                    model_name="call",
                    constraint=models.UniqueConstraint(fields=("call_id",), name="call_id_once", opclasses=["varchar_pattern_ops"]),
                ),
                migrations.AlterField(
                    model_name="call",
                    name="call_id",
                    field=models.CharField(default=realtime.models.new_call_id, editable=False, max_length=40, verbose_name="call id"),
                ),
                *partial("call_reason_recent_idx", ["end_reason", "-created_at", "-id"], ~models.Q(end_reason="")),
                *partial("call_key_recent_idx", ["api_key", "-created_at", "-id"], WITH_KEY),
                *partial("call_key_status_recent_idx", ["api_key", "status", "-created_at", "-id"], WITH_KEY),
                *partial("call_monitor_claim_idx", ["status", "monitor_lease_until", "id"], CLAIMABLE),
                *partial("call_deadline_idx", ["status", "deadline_at"], WITH_DEADLINE),
                *partial("call_idle_idx", ["status", "last_activity_at", "answered_at"], IDLE_SINCE),
                *partial("call_sip_route_idx", ["sip_route"], models.Q(sip_route__isnull=False)),
            ]
        ),
        migrations.RemoveIndex(model_name="call", name="call_ended_idx"),
    ]
