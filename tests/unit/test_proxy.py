"""FaultProxy's ``latency`` mode against a local echo server: every byte comes back one round
trip after it was sent (a new connection's first bytes one more, its handshake), however
many chunks and connections share the link; ``slow`` still waits in each direction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from hmls_devenv.proxy import FaultProxy

ONE_WAY = 0.1
RTT = 2 * ONE_WAY
CHUNKS = 5
GAP = 0.02


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    p = FaultProxy("echo", server.sockets[0].getsockname()[1])
    await p.start()
    yield p
    await asyncio.sleep(RTT)  # the connections' ends reach the echo server
    await p.close()
    server.close()
    await server.wait_closed()


async def _echoed(port: int) -> tuple[float, float]:
    """Over one new connection: seconds until a first chunk's echo; then CHUNKS chunks GAP
    apart, and seconds from the first of them until the last echoed byte."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hello;")
    assert await reader.readexactly(6) == b"hello;"
    first = time.perf_counter() - t0
    t1, sent = time.perf_counter(), b""
    for i in range(CHUNKS):
        chunk = f"chunk {i};".encode()
        writer.write(chunk)
        sent += chunk
        await asyncio.sleep(GAP)
    assert await reader.readexactly(len(sent)) == sent
    stream = time.perf_counter() - t1
    writer.close()
    return first, stream


async def test_latency_delays_each_byte_by_the_round_trip_without_serialising(
        proxy: FaultProxy) -> None:
    proxy.set("latency", ONE_WAY)
    t0 = time.perf_counter()
    results = await asyncio.gather(_echoed(proxy.port), _echoed(proxy.port))
    elapsed = time.perf_counter() - t0
    sending = (CHUNKS - 1) * GAP
    for first, stream in results:
        assert RTT + RTT - 0.01 <= first < RTT + RTT + 0.15  # the handshake, then the echo
        # serialised, the CHUNKS chunks would take CHUNKS round trips
        assert RTT + sending - 0.01 <= stream < RTT + sending + 0.15 < CHUNKS * RTT
    assert elapsed < 3 * RTT + CHUNKS * GAP + 0.2  # the two connections did not queue


async def test_slow_waits_in_each_direction(proxy: FaultProxy) -> None:
    proxy.set("slow", ONE_WAY)
    first, _ = await _echoed(proxy.port)
    assert first >= RTT - 0.01


async def test_pass_after_latency(proxy: FaultProxy) -> None:
    proxy.set("latency", ONE_WAY)
    proxy.set("pass")
    first, stream = await _echoed(proxy.port)
    assert first < ONE_WAY and stream < RTT
