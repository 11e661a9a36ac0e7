"""manage.py purge_call_data [--dry-run]: purge now what the retention settings say has expired.

The same purge as the background one (realtime/retention.py), run to the end; `--dry-run` says
how many calls each kind would purge, and changes nothing.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from realtime import retention


class Command(BaseCommand):
    help = "Purge the personal data of calls past their retention periods (docs/privacy.md)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Say what would be purged; change nothing.")

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        now = timezone.now()
        if dry_run:
            for kind, count in retention.due_counts(now=now).items():
                days = settings.REALTIME_RETENTION_DAYS[kind]
                if count is None:
                    self.stdout.write(f"{kind}: kept forever")
                else:
                    verb = "deleted" if kind == "calls" else "purged"
                    self.stdout.write(f"{kind}: {count} calls would be {verb} (ended more than {days} days ago)")
            return
        result = retention.purge_all(now=now)
        for kind in (*retention.services.PURGE_KINDS, "calls"):
            if settings.REALTIME_RETENTION_DAYS[kind] is None:
                self.stdout.write(f"{kind}: kept forever")
            else:
                verb = "deleted" if kind == "calls" else "purged"
                self.stdout.write(f"{kind}: {result.purged.get(kind, 0)} calls {verb}")
