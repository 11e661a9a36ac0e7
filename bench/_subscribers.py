"""Lean WebSocket subscribers for fan-out benchmarks, in processes of their own.

Each process holds its share of the sockets on one event loop. A socket is an asyncio `Protocol`
with no task, queue or future of its own: websockets' Sans-I/O `ClientProtocol` makes the opening
handshake, then frames are read straight from the bytes (a server's frames are unmasked, and ours
sends each push as one unfragmented text frame). With 2,000 sockets on the same two cores as the
servers, the client's work ends up in the servers' latency figures: websockets' asyncio client,
and even its Sans-I/O parser, cost several times more CPU per frame than this reading does
(docs/benchmarks.md, "Scaled topology").

What is timed is the same as with the full client: for each socket, the CLOCK_MONOTONIC time at
which the frame announcing a given call's event (`call.changed`, `call_id`, `event_type`) was read
from it. Frames are decoded as JSON only when they name that call and that event type.

The parent talks to each process through two queues: it sends ("watch", call_id, event_type) and
gets ("watching",) once the sockets look for it, then ("received", [monotonic_ns per socket],
cpu_ms, frames, pings), where cpu_ms is the process's own CPU time (user + system) from the
command to the last socket's frame, frames and pings what its sockets read meanwhile; ("stop",)
ends the process.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import resource
import time
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Origin
from websockets.uri import parse_uri


class _Watch:
    """What every socket of the process is waiting for, and when each got it."""

    def __init__(self, call_id: str, event_type: str, sockets: int) -> None:
        self.call_id = call_id.encode()
        self.event_type = event_type
        self.needle = f'"{event_type}"'.encode()
        self.received: dict[int, int] = {}
        self.frames = 0  # every text frame read while watching, on every socket
        self.pings = 0  # and every ping (the server's keepalive, every 20 s per socket by default)
        self.sockets = sockets
        self.done = asyncio.get_running_loop().create_future()

    def frame(self, index: int, data: bytes) -> None:
        if index in self.received or self.needle not in data or self.call_id not in data:
            return
        message = json.loads(data)
        if message.get("type") != "call.changed" or message["event"]["event_type"] != self.event_type:
            return
        # An empty call id: any call's (the caller does not know the id before it creates the call).
        if not self.call_id or message["call"]["call_id"] == self.call_id.decode():
            self.received[index] = time.monotonic_ns()
            if len(self.received) == self.sockets and not self.done.done():
                self.done.set_result(None)


class _Subscriber(asyncio.Protocol):
    def __init__(self, index: int, url: str, origin: str, watching: list[_Watch | None]) -> None:
        self.index = index
        self.protocol = ClientProtocol(parse_uri(url), origin=Origin(origin), max_size=None)
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.watching = watching
        self.transport: asyncio.Transport | None = None
        self.buffer: bytearray | None = None  # once open: bytes not yet parsed into frames

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self.buffer is not None:
            self._read_frames(data)
            return
        # The opening handshake, and any frame that came with its answer, through websockets.
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                if self.protocol.handshake_exc is not None:
                    self.opened.set_exception(self.protocol.handshake_exc)
                else:
                    self.opened.set_result(None)
                    self.buffer = bytearray()
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self._text(bytes(event.data))
        self._flush()

    def _read_frames(self, data: bytes) -> None:
        """Server frames, parsed from the bytes (RFC 6455 §5.2): never masked, and our server sends
        each push as one unfragmented text frame. Pings are answered; a close frame closes."""
        assert self.buffer is not None and self.transport is not None
        buffer = self.buffer
        buffer += data
        offset = 0
        while len(buffer) - offset >= 2:
            first, length, head = buffer[offset], buffer[offset + 1], 2
            assert not length & 0x80, "a server frame is never masked"
            if length == 126:
                length, head = int.from_bytes(buffer[offset + 2 : offset + 4], "big"), 4
            elif length == 127:
                length, head = int.from_bytes(buffer[offset + 2 : offset + 10], "big"), 10
            end = offset + head + length
            if len(buffer) < end or len(buffer) - offset < head:
                break
            payload, opcode = bytes(buffer[offset + head : end]), first & 0x0F
            offset = end
            if opcode == Opcode.TEXT.value:
                assert first & 0x80, "a push is one unfragmented frame"
                self._text(payload)
            elif opcode == Opcode.PING.value:
                self.transport.write(_client_frame(Opcode.PONG, payload))
                if self.watching[0] is not None:
                    self.watching[0].pings += 1
            elif opcode == Opcode.CLOSE.value:
                self.transport.close()
        del buffer[:offset]

    def _text(self, data: bytes) -> None:
        watch = self.watching[0]
        if watch is not None:
            watch.frames += 1
            watch.frame(self.index, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))

    def _flush(self) -> None:
        assert self.transport is not None
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def close(self) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(_client_frame(Opcode.CLOSE, (1000).to_bytes(2, "big")))
            self.transport.close()


def _client_frame(opcode: Opcode, payload: bytes) -> bytes:
    """A short control frame from the client: final, masked (with a zero key, which RFC 6455 allows)."""
    assert len(payload) < 126
    return bytes([0x80 | opcode.value, 0x80 | len(payload)]) + bytes(4) + payload


def _cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1000


def _serve(url: str, count: int, commands: Any, results: Any) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 256)), hard))
    asyncio.run(_hold(url, count, commands, results))


async def _hold(url: str, count: int, commands: Any, results: Any) -> None:
    loop = asyncio.get_running_loop()
    ws_url = url.replace("http://", "ws://") + "/ws/realtime/calls"
    uri = parse_uri(ws_url)
    watching: list[_Watch | None] = [None]
    sockets: list[_Subscriber] = []
    for start in range(0, count, 100):
        batch = [_Subscriber(i, ws_url, url, watching) for i in range(start, min(start + 100, count))]
        await asyncio.gather(*(loop.create_connection(lambda s=s: s, uri.host, uri.port) for s in batch))  # type: ignore[misc]
        await asyncio.wait_for(asyncio.gather(*(s.opened for s in batch)), timeout=60)
        sockets += batch
    results.put(("ready", count))
    while True:
        command = await loop.run_in_executor(None, commands.get)
        if command[0] == "stop":
            break
        _, call_id, event_type = command
        cpu_before = _cpu_ms()
        watch = watching[0] = _Watch(call_id, event_type, count)
        results.put(("watching",))
        await asyncio.wait_for(watch.done, timeout=120)
        watching[0] = None
        results.put(("received", [watch.received[i] for i in range(count)], _cpu_ms() - cpu_before, watch.frames, watch.pings))
    for sock in sockets:
        sock.close()
    await asyncio.sleep(0.5)


class Subscribers:
    """`total` sockets to `url`'s call list feed, spread over `processes` client processes."""

    def __init__(self, url: str, total: int, processes: int) -> None:
        context = mp.get_context("spawn")
        self.queues: list[tuple[Any, Any]] = []
        self.workers: list[Any] = []
        shares = [total // processes + (i < total % processes) for i in range(processes)]
        for count in (share for share in shares if share):
            commands, results = context.Queue(), context.Queue()
            worker = context.Process(target=_serve, args=(url, count, commands, results), daemon=True)
            worker.start()
            self.workers.append(worker)
            self.queues.append((commands, results))
        for _, results in self.queues:
            results.get(timeout=300)
        self.total = total

    def watch(self, call_id: str, event_type: str) -> None:
        """From now on, note when each socket reads that frame (an empty call_id: any call's)."""
        for commands, _ in self.queues:
            commands.put(("watch", call_id, event_type))
        for _, results in self.queues:
            results.get(timeout=60)

    def received(self) -> tuple[list[int], float, int, int]:
        """Each socket's monotonic_ns for the watched frame, the client processes' CPU ms, and how
        many text frames and pings all sockets read until then."""
        times: list[int] = []
        cpu = 0.0
        frames = pings = 0
        for _, results in self.queues:
            _, received, cpu_ms, count, ping_count = results.get(timeout=180)
            times += received
            cpu += cpu_ms
            frames += count
            pings += ping_count
        return times, cpu, frames, pings

    def stop(self) -> None:
        for commands, _ in self.queues:
            commands.put(("stop",))
        for worker in self.workers:
            worker.join(30)
            if worker.is_alive():
                worker.kill()
