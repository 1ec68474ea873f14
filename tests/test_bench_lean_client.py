"""The throughput benchmark's lean HTTP client (bench/bench_core.py LeanConnection), against
a loopback server that answers by hand: replies read whole, keep-alive reused, a closed
connection reopened, a non-200 reply refused."""

from __future__ import annotations

import asyncio
import json

import pytest

from bench.bench_core import BenchError, LeanConnection


async def _serve(replies: list[tuple[bytes, bool]]) -> tuple[asyncio.Server, int, list[int]]:
    """A server answering each request with the next (status line, close?) in turn; it
    records the number of the connection each request came on."""
    seen: list[int] = []
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        me = connections
        while replies:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            body = json.loads(await reader.readexactly(length))
            status, close = replies.pop(0)
            seen.append(me)
            out = json.dumps({"echo": body, "n": len(seen)}).encode()
            writer.write(status + b"\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(out)).encode()
                         + (b"\r\nConnection: close" if close else b"") + b"\r\n\r\n" + out)
            await writer.drain()
            if close:
                break
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


def test_replies_keep_alive_and_reconnect_after_close() -> None:
    async def main() -> None:
        ok = b"HTTP/1.1 200 OK"
        server, port, seen = await _serve([(ok, False), (ok, True), (ok, False)])
        conn = LeanConnection("127.0.0.1", port)
        try:
            first = await conn.post("/createTask", b'{"a": 1}')
            second = await conn.post("/getTaskResult", b'{"b": 2}')
            third = await conn.post("/getTaskResult", b'{"c": 3}')
        finally:
            await conn.close()
            server.close()
        assert first == {"echo": {"a": 1}, "n": 1}
        assert second == {"echo": {"b": 2}, "n": 2}
        assert third == {"echo": {"c": 3}, "n": 3}
        assert seen == [1, 1, 2]  # kept alive, then a new connection after "close"

    asyncio.run(main())


def test_refuses_a_reply_that_is_not_200() -> None:
    async def main() -> None:
        server, port, _ = await _serve([(b"HTTP/1.1 500 Internal Server Error", False)])
        conn = LeanConnection("127.0.0.1", port)
        try:
            with pytest.raises(BenchError, match="500"):
                await conn.post("/createTask", b"{}")
        finally:
            await conn.close()
            server.close()

    asyncio.run(main())
