"""`manage.py serve` with home-made parts swapped for what they replace, to measure what they earn.

Used by bench/ws_fanout.py and bench/create_variants.py (`--variant`); never by the product. BENCH_VARIANT is a comma-separated
list of:
- `stock-layer`: Channels' own InMemoryChannelLayer instead of realtime.layers' fork;
- `no-encode-cache`: every socket encodes its push (realtime.consumers without its cache);
- `redis`: channels_redis on BENCH_REDIS_URL (the scaled deployment's layer);
- `channels-dispatch`: the feeds' consumers read their messages with Channels' own loop
  (`await_many_dispatch`) instead of realtime.consumers.dispatch_from;
- `sdk-httpx`: the OpenAI SDK over httpx's own transport instead of its aiohttp one
  (realtime.upstream.client);
- `unprepared`: a transition's statement through Django's own cursor, bound on the client and
  planned at every run, instead of prepared on the connection (realtime.statements).

Usage: python bench/_variant_server.py --port P (the rest as `manage.py serve`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iaposte.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

variant = {part for part in os.environ.get("BENCH_VARIANT", "").split(",") if part}
if "stock-layer" in variant:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
if "redis" in variant:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py's pool stops at 100 connections by default: 1,000 sockets joining their group
            # at once would fail with "Too many connections".
            "CONFIG": {"hosts": [{"address": os.environ["BENCH_REDIS_URL"], "max_connections": 2000}]},
        }
    }
if "no-encode-cache" in variant:
    from realtime import consumers

    def encode(message: dict[str, Any], keys: tuple[str, ...]) -> str:
        return json.dumps({"type": message["type"], **{key: message[key] for key in keys}})

    consumers._encode = encode

if "channels-dispatch" in variant:
    from channels.consumer import AsyncConsumer

    from realtime import consumers

    del consumers._Feed.__call__
    assert consumers._Feed.__call__ is AsyncConsumer.__call__

if "sdk-httpx" in variant:
    import openai

    openai.DefaultAioHttpClient = openai.DefaultAsyncHttpxClient  # type: ignore[misc]

if "unprepared" in variant:
    from django.db import connection

    from realtime import statements

    statements._prepared_cursor = lambda: connection.cursor()  # type: ignore[assignment]

call_command("serve", *sys.argv[1:])
