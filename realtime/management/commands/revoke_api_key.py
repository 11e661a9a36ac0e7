"""manage.py revoke_api_key PREFIX: refuse a key from now on (rotation's last step, or a leak)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from realtime import services
from realtime.models import ApiKey


class Command(BaseCommand):
    help = "Revoke an API key, named by its visible prefix (iap_xxxxxxxx)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", help="The key's prefix as shown in the admin (its first 12 characters).")

    def handle(self, *args: Any, prefix: str, **options: Any) -> None:
        key = ApiKey.objects.filter(prefix=prefix.rstrip("…")).first()
        if key is None:
            raise CommandError(f"No API key with prefix {prefix!r}.")
        if services.api_key_revoke(ApiKey.objects.filter(pk=key.pk), by=services.COMMAND_LINE):
            self.stdout.write(f"Revoked {key}.")
        else:
            self.stdout.write(f"{key} was already revoked.")
