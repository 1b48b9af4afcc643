"""A TCP proxy in front of a real server that the client tests control: it forwards one
request per connection (asking the server to close afterwards) and, by rule, answers a
request itself (a 503, a 429), drops it without an answer, or cuts the server's answer after
a number of complete SSE events, to break a stream in the middle of a run.

Every request it sees is recorded (method, path, headers), so tests can check what the
client sent and how often.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

_EVENT_END = re.compile(rb"id: \d+\n\n")


@dataclass(frozen=True)
class Seen:
    """A request the proxy received."""

    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Rule:
    """What to do, ``times`` more times, with a request that ``matches``: ``reply`` (a raw
    status line and headers, sent with an empty JSON error body), ``drop`` (close without
    an answer), or ``cut_after`` (forward, then close after that many complete events)."""

    matches: Callable[[Seen], bool]
    times: int
    reply: tuple[int, dict[str, str]] | None = None
    drop: bool = False
    cut_after: int | None = None


@dataclass
class FaultProxy:
    """The proxy (see the module docstring); :meth:`start` it, use :attr:`url`."""

    upstream_port: int
    requests: list[Seen] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def reset(self) -> None:
        with self._lock:
            self.rules.clear()
            self.requests.clear()

    def seen(self, method: str, path_part: str) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if r.method == method and path_part in r.path]

    def start(self) -> FaultProxy:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            server = self._loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            server.close()
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="fault-proxy")
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def _rule_for(self, seen: Seen) -> Rule | None:
        with self._lock:
            self.requests.append(seen)
            for rule in self.rules:
                if rule.times > 0 and rule.matches(seen):
                    rule.times -= 1
                    return rule
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        rule = self._rule_for(Seen(method, path, headers))
        if rule is not None and rule.drop:
            return
        if rule is not None and rule.reply is not None:
            status, extra = rule.reply
            payload = b'{"code":"proxy","message":"injected by the test proxy"}'
            out = [f"HTTP/1.1 {status} Injected", "Content-Type: application/json",
                   f"Content-Length: {len(payload)}", "Connection: close",
                   *(f"{k}: {v}" for k, v in extra.items())]
            writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + payload)
            await writer.drain()
            return
        kept = [line for line in lines[1:] if line and not line.lower().startswith("connection:")]
        forwarded = "\r\n".join([lines[0], *kept, "Connection: close"]) + "\r\n\r\n"
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            up_writer.write(forwarded.encode("latin-1") + body)
            await up_writer.drain()
            await self._pipe(up_reader, writer, rule.cut_after if rule else None)
        finally:
            up_writer.close()

    @staticmethod
    async def _pipe(up: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    cut_after: int | None) -> None:
        passed = bytearray()
        while True:
            data = await up.read(65536)
            if not data:
                return
            if cut_after is not None:
                ends = list(_EVENT_END.finditer(bytes(passed) + data))
                if len(ends) >= cut_after:
                    # up to the end of that event, and a piece of the next: a torn event
                    stop = ends[cut_after - 1].end() + 12 - len(passed)
                    writer.write(data[:max(0, stop)])
                    await writer.drain()
                    return
                passed += data
            writer.write(data)
            await writer.drain()
