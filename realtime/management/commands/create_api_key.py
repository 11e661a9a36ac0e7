"""manage.py create_api_key NAME [--owner USERNAME] [--expires-in-days N]

Prints the new key alone on stdout (so `KEY=$(python manage.py create_api_key ci)` works) and a
description on stderr. The key is shown this once: only its hash and prefix are stored.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from realtime import services
from realtime.models import ApiKey


class Command(BaseCommand):
    help = "Create an API key for an integrator and print it (shown once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="What the key is for, e.g. 'standard téléphonique'.")
        parser.add_argument("--owner", help="Username of the person responsible for the key.")
        parser.add_argument("--expires-in-days", type=int, help="Refuse the key after this many days.")

    def handle(self, *args: Any, name: str, owner: str | None, expires_in_days: int | None, **options: Any) -> None:
        name = name.strip()
        if not name or len(name) > (ApiKey._meta.get_field("name").max_length or 100):
            raise CommandError("The name must be 1 to 100 characters.")
        user = None
        if owner:
            try:
                user = get_user_model().objects.get_by_natural_key(owner)
            except get_user_model().DoesNotExist:
                raise CommandError(f"No user named {owner!r}.") from None
        expires_at = None
        if expires_in_days is not None:
            if expires_in_days < 1:
                raise CommandError("--expires-in-days must be at least 1.")
            expires_at = timezone.now() + timedelta(days=expires_in_days)
        key = ApiKey(name=name, owner=user, expires_at=expires_at)
        raw = services.api_key_create(key, by=services.COMMAND_LINE)
        expiry = f", expires {expires_at:%Y-%m-%d %H:%M %Z}" if expires_at else ""
        self.stderr.write(f"Created API key {key.prefix}… ({key.name}{expiry}). Store it now: it is not shown again.")
        self.stdout.write(raw)
