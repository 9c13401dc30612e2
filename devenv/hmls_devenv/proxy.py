"""A TCP proxy in front of one spoke's API server port, for network faults (the chaos soak
and the fault tests) and far-away spokes (the benchmarks' round-trip cases).

The controller reaches the spoke only through it (the spoke is joined with a kubeconfig that
names the proxy's port; TLS is end to end, the proxy only moves bytes).  Modes:

  pass        bytes flow as they come
  slow        every chunk waits ``delay`` seconds in each direction, one after the other, so
              a response of many chunks waits many times (a slow link: closer to a bandwidth
              cap than to a far-away cluster)
  latency     a far-away cluster: each direction delivers every chunk ``delay`` seconds (the
              one-way delay, half the round trip) after it arrived, in order, without
              waiting for the chunks before it to be delivered, so neither concurrent
              connections nor back-to-back chunks wait more than the link's latency; a new
              connection first waits a round trip (the TCP handshake, which the local accept
              skips)
  drop        every open connection is reset, new ones are closed at once (a partition that
              the client notices)
  blackhole   connections stay open but nothing moves until the mode changes (a partition
              that the client does not notice: only its timeouts find it); held bytes are
              delivered afterwards, as TCP retransmission would
"""

from __future__ import annotations

import asyncio
import contextlib

import yaml

MODES = ("pass", "slow", "latency", "drop", "blackhole")


class FaultProxy:
    def __init__(self, name: str, target_port: int) -> None:
        self.name = name
        self.target_port = target_port
        self.port = 0
        self.mode = "pass"
        self.delay = 0.0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.set("drop")
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    def kubeconfig(self, kubeconfig: str) -> str:
        """The target's kubeconfig (YAML) made to reach it through this proxy."""
        cfg = yaml.safe_load(kubeconfig)
        cfg["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        return str(yaml.safe_dump(cfg))

    def set(self, mode: str, delay: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"proxy mode {mode!r}: one of {', '.join(MODES)}")
        self.mode, self.delay = mode, delay
        if mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()
        if mode == "drop":
            for w in list(self._writers):
                w.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "drop":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        # in latency mode, what the client sends before its handshake would have ended
        # leaves then: the local accept let it send at once
        handshake = asyncio.get_running_loop().time() + (
            2 * self.delay if self.mode == "latency" else 0.0)
        try:
            await asyncio.gather(self._pipe(reader, up_writer, not_before=handshake),
                                 self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *,
                    not_before: float = 0.0) -> None:
        """One direction: a reader stamps each chunk with its arrival time, the writer (this
        task) delivers it when due.  Outside ``latency`` the reader waits for each chunk to
        be delivered before reading the next (one chunk in flight: the peer's TCP window holds
        the rest, as before); in ``latency`` it reads on, as a link carries the bytes sent
        meanwhile."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    chunks.put_nowait((max(loop.time(), not_before), data))
                    if self.mode != "latency":
                        await chunks.join()
            chunks.put_nowait((loop.time(), b""))  # the end travels the link too

        reader = asyncio.create_task(read())
        try:
            with contextlib.suppress(OSError):
                while True:
                    arrived, data = await chunks.get()
                    if self.mode == "latency":
                        await asyncio.sleep(arrived + self.delay - loop.time())
                    if not data:
                        return
                    await self._flowing.wait()
                    if self.mode == "slow":
                        await asyncio.sleep(self.delay)
                    if dst.transport.is_closing():
                        return
                    dst.write(data)
                    await dst.drain()
                    chunks.task_done()
        finally:
            reader.cancel()
            dst.close()  # one side ended: end the other once its bytes are out
