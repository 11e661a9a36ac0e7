"""A lean HTTP/1.1 client for load benchmarks that share the servers' cores.

httpx spends about 7.5 ms of CPU per create in bench/scaled.py's burst (its own figure,
`cpu_ms_per_create.client`): as much as both web processes together, taken from the same two
cores the servers run on. Real integrators call from other machines. This client writes each
request as one buffer and reads the response with asyncio's streams: status line, headers, and a
body sized by `Content-Length` or sent in chunks. Connections are kept alive and reused, one per
request in flight, as httpx does with a connection limit as large as the concurrency; like httpx,
a connection idle for more than KEEPALIVE_EXPIRY seconds is closed rather than reused, so a
request never goes out on one the server is closing (nginx closes idle ones after 30 s).

`--http httpx` in bench/scaled.py keeps the old client, to compare.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

# httpx's default keep-alive expiry.
KEEPALIVE_EXPIRY = 5.0


class LeanHTTPError(Exception):
    """The connection failed or closed before a whole response was read."""


class LeanHTTP:
    def __init__(self, base_url: str, timeout: float = 60) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.authority = f"{self.host}:{self.port}".encode()
        self.timeout = timeout
        # (reader, writer, idle since): the most recently used last.
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def __aenter__(self) -> LeanHTTP:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer, _ in idle:
            writer.close()
        for _, writer, _ in idle:
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def post_json(self, path: str, payload: Any) -> tuple[int, Any]:
        status, body = await self.request("POST", path, json.dumps(payload).encode())
        return status, _decoded(body)

    async def delete(self, path: str) -> tuple[int, Any]:
        status, body = await self.request("DELETE", path)
        return status, _decoded(body)

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        head = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + self.authority, b"Accept: application/json"]
        if body is not None:
            head += [b"Content-Type: application/json", b"Content-Length: " + str(len(body)).encode()]
        data = b"\r\n".join(head) + b"\r\n\r\n" + (body or b"")
        try:
            return await asyncio.wait_for(self._exchange(data), self.timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
            raise LeanHTTPError(f"{type(exc).__name__}: {exc}") from exc

    async def _exchange(self, data: bytes) -> tuple[int, bytes]:
        reader, writer = await self._connection()
        try:
            writer.write(data)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                body = await _chunked(reader)
            else:
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
        except BaseException:
            writer.close()
            raise
        if headers.get(b"connection", b"").lower() == b"close":
            writer.close()
        else:
            self._idle.append((reader, writer, time.monotonic()))
        return status, body

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = time.monotonic()
        while self._idle:
            reader, writer, since = self._idle.pop()
            if now - since < KEEPALIVE_EXPIRY and not reader.at_eof():
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self.host, self.port)


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers from our servers: the final empty line
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _decoded(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None
