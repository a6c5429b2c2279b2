"""The emulator's own CPU cost per call: N answered calls, each with a GET and a POST stream.

    python bench/bench_emulator.py                          # 100 and 200 calls, 10 s each
    python bench/bench_emulator.py --calls 100,200,500 --seconds 10
    python bench/bench_emulator.py --tree /tmp/emu-base     # the emulator from another tree (before/after):
    #   mkdir /tmp/emu-base && git archive HEAD | tar -x -C /tmp/emu-base

The emulator runs as its own process (``python -m ivr.cli emulator``). This script places N
calls through ``/_emulator/calls`` (the route point answers at once) and is the IVR side
itself, over raw loopback sockets so that it stays cheap: per call it reads the GET stream
(bytes counted, not parsed) and sends a chunked POST stream of 320-byte chunks at 50 a
second, all POST streams from one 20 ms timer. After a warm-up it reads the emulator's CPU
time from /proc over a window and prints CPU-ms per call-second, the GET stream rate each
call received (16,000 B/s of audio is 16,350 B/s on the wire with chunk framing) and how
much POST audio the emulator heard (``heard_seconds`` of a few calls).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from _harness import ROOT, SECRET, _wait_http, free_port, machine_info, proc_sample

FRAME = bytes(range(160)) * 2  # 320 bytes, 20 ms of s16le 8 kHz mono (content is irrelevant)
CHUNK = b"140\r\n" + FRAME + b"\r\n"  # one HTTP/1.1 chunk of it
WIRE_BPS = 50 * len(CHUNK)  # GET bytes per second on the wire, framing included


class GetReader(asyncio.Protocol):
    """Counts what arrives on one GET stream (headers and chunk framing included)."""

    def __init__(self) -> None:
        self.nbytes = 0
        self.closed = asyncio.get_running_loop().create_future()  # final chunk or connection lost
        self.transport: asyncio.BaseTransport | None = None
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.nbytes += len(data)
        self.tail = (self.tail + data)[-7:]
        if self.tail == b"\r\n0\r\n\r\n" and not self.closed.done():
            self.closed.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class PostWriter(asyncio.Protocol):
    """One chunked POST stream; the shared pacer writes to it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def open_stream(port: int, path: str, token: str, method: str, proto: asyncio.Protocol) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(lambda: proto, "127.0.0.1", port)
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
    if method == "POST":
        head += "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n"
    transport.write((head + "\r\n").encode())


async def pace_posts(writers: list[PostWriter], stop: asyncio.Event) -> None:
    """50 chunks a second into every POST stream, from one timer; late ticks catch up."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    sent = 0
    while not stop.is_set():
        due = int((loop.time() - t0) / 0.02) + 1
        data = CHUNK * (due - sent)
        sent = due
        for w in writers:
            if w.transport is not None:
                w.transport.write(data)
        await asyncio.sleep(max(0.0, t0 + sent * 0.02 - loop.time()))


async def run(url: str, port: int, pid: int, n: int, seconds: float, warmup: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/connect/token",
                             data={"client_id": "900", "client_secret": SECRET,
                                   "grant_type": "client_credentials"}) as r:
            token = (await r.json())["access_token"]
        sem = asyncio.Semaphore(20)

        async def place(i: int) -> int:
            async with sem, http.post(f"{url}/_emulator/calls", json={"from": f"+4930{i:07d}", "to": "800"}) as r:
                return int((await r.json())["callid"])

        callids = await asyncio.gather(*(place(i) for i in range(n)))
        async with http.get(f"{url}/callcontrol/800/participants",
                            headers={"Authorization": f"Bearer {token}"}) as r:
            pids = {p["callid"]: p["id"] for p in await r.json()}
        readers = [GetReader() for _ in callids]
        writers = [PostWriter() for _ in callids]
        for callid, rd, wr in zip(callids, readers, writers):
            path = f"/callcontrol/800/participants/{pids[callid]}/stream"
            await open_stream(port, path, token, "GET", rd)
            await open_stream(port, path, token, "POST", wr)
        stop = asyncio.Event()
        pacer = loop.create_task(pace_posts(writers, stop))
        # Every GET stream flowing (a full accept backlog delays some connects) before the warm-up.
        deadline = loop.time() + 30
        while min(rd.nbytes for rd in readers) < WIRE_BPS // 2:
            if loop.time() > deadline:
                stuck = sum(rd.nbytes < WIRE_BPS // 2 for rd in readers)
                raise RuntimeError(f"bench_emulator: {stuck} of {n} GET streams not flowing after 30 s")
            await asyncio.sleep(0.1)
        await asyncio.sleep(warmup)
        heard0 = []
        for callid in callids[:5]:
            async with http.get(f"{url}/_emulator/calls/{callid}") as r:
                heard0.append((await r.json())["heard_seconds"])
        got0 = [rd.nbytes for rd in readers]
        s0, c0 = proc_sample(pid), time.process_time()
        await asyncio.sleep(seconds)
        s1, c1 = proc_sample(pid), time.process_time()
        got1 = [rd.nbytes for rd in readers]
        heard1 = []
        for callid in callids[:5]:
            async with http.get(f"{url}/_emulator/calls/{callid}") as r:
                heard1.append((await r.json())["heard_seconds"])
        stop.set()
        await pacer
        for callid in callids:
            async with http.post(f"{url}/_emulator/calls/{callid}/hangup") as r:
                await r.read()
        await asyncio.wait_for(asyncio.gather(*(rd.closed for rd in readers)), 10)
        for proto in (*readers, *writers):
            if proto.transport is not None:
                proto.transport.close()
    window = s1.at - s0.at
    rates = sorted((b - a) / window for a, b in zip(got0, got1))
    return {
        "cpu_ms_per_call_s": (s1.cpu_s - s0.cpu_s) * 1000 / (n * window),
        "cpu_pct": (s1.cpu_s - s0.cpu_s) / window * 100,
        "client_pct": (c1 - c0) / window * 100,
        "get_min": rates[0], "get_median": rates[len(rates) // 2], "get_max": rates[-1],
        "heard_rate": sum(b - a for a, b in zip(heard0, heard1)) / len(heard0) / window,
        "rss_mb": s1.rss / 2**20,
    }


def start_emulator(workdir: Path, port: int, tree: str | None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=tree or str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ivr.cli", "emulator", "--port", str(port), "--client-secret", SECRET],
        stdout=open(workdir / "emulator.log", "wb"), stderr=subprocess.STDOUT, cwd=workdir, env=env,
    )
    _wait_http(f"http://127.0.0.1:{port}/_emulator/health", 30, proc)
    return proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", default="100,200", help="comma list of N (one run each)")
    ap.add_argument("--seconds", type=float, default=10.0, help="measurement window per N")
    ap.add_argument("--warmup", type=float, default=3.0, help="streams open this long before the window")
    ap.add_argument("--tree", default=None, help="run the emulator from this source tree (PYTHONPATH)")
    args = ap.parse_args()
    print(machine_info())
    print(f"emulator from {args.tree or 'this tree'}; window {args.seconds:.0f} s after {args.warmup:.0f} s warm-up")
    print(f"{'calls':>5} {'emu CPU-ms/call-s':>18} {'emu %core':>9} {'client %core':>12} "
          f"{'GET B/s min/med/max (wire; 16350 = real time)':>46} {'heard s/s':>9} {'RSS MB':>6}")
    with tempfile.TemporaryDirectory(prefix="bench-emu-") as tmp:
        for n in [int(x) for x in args.calls.split(",")]:
            port = free_port()
            proc = start_emulator(Path(tmp), port, args.tree)
            try:
                r = asyncio.run(run(f"http://127.0.0.1:{port}", port, proc.pid, n, args.seconds, args.warmup))
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            print(f"{n:>5} {r['cpu_ms_per_call_s']:>18.2f} {r['cpu_pct']:>9.0f} {r['client_pct']:>12.0f} "
                  f"{r['get_min']:>14.0f} / {r['get_median']:>6.0f} / {r['get_max']:>6.0f}{'':>15} "
                  f"{r['heard_rate']:>9.2f} {r['rss_mb']:>6.0f}", flush=True)


if __name__ == "__main__":
    main()
