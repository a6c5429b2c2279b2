"""Per-call CPU of the audio streams' wire logic, without I/O: `python bench/bench_wire.py`.

Microseconds of process CPU per 40 ms of one call's audio (best of several repeats, to shed
noise from other processes on the machine):

* the outbound pacer (`ivr.pbx.pacer.Pacer`, pull mode, lead 80 ms, batch 2): one wake-up
  per 40 ms - `pull`, the source asked for two frames, `due` - as `OutboundAudio` runs it;
* the response parser (`ivr.pbx.http11.ResponseParser`) fed one 40 ms block of a chunked
  body (two 320-byte chunks), and the same through `HttpStream` (parser, audio buffer, take).

The process benchmarks (bench_concurrency.py) give the whole worker; this one isolates these
two so a change to them can be measured in microseconds, not in the +-20% of a loaded run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _harness import machine_info

from ivr.pbx.http11 import ResponseParser
from ivr.pbx.httpstream import HttpStream
from ivr.pbx.pacer import FRAME_BYTES, Pacer

REPEATS = 5
FRAME = bytes(FRAME_BYTES)
BLOCK = (b"%x\r\n" % FRAME_BYTES + FRAME + b"\r\n") * 2  # 40 ms of a GET stream's body
HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def best_us(run: Callable[[int], None], n: int) -> float:
    """Best per-iteration process CPU of ``run(n)`` over REPEATS, in microseconds."""
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.process_time()
        run(n)
        best = min(best, (time.process_time() - t0) / n)
    return best * 1e6


def pacer_run(n: int) -> None:
    pacer = Pacer(80, 2)
    buffered = 0
    now = 0.0
    for _ in range(n):
        frames, _ = pacer.pull(now)
        buffered += frames * FRAME_BYTES  # the source has every frame asked for
        size, wake_next = pacer.due(now, buffered)
        buffered -= size
        assert size and wake_next is not None
        now = wake_next


def parser_run(n: int) -> None:
    taken = bytearray()
    parser = ResponseParser(lambda status, reason: None, taken.extend)
    parser.feed(bytearray(HEAD))
    for _ in range(n):
        parser.feed(bytearray(BLOCK))
        del taken[:]


async def httpstream_run(n: int) -> None:
    conn = HttpStream(b"GET / HTTP/1.1\r\n\r\n", head_now=True, stream_ok=True)
    conn._received(bytearray(HEAD))  # no socket: fed as MediaSocket.read would hand it over
    for _ in range(n):
        conn._received(bytearray(BLOCK))
        conn.take()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=100_000, help="40 ms blocks per repeat (default 100000)")
    n = ap.parse_args().blocks
    print(machine_info())
    print(f"us of CPU per 40 ms block of one call (best of {REPEATS} x {n} blocks)")
    print(f"pacer wake-up (pull + due):        {best_us(pacer_run, n):6.3f}")
    print(f"response parser, 2 chunks:         {best_us(parser_run, n):6.3f}")
    loop = asyncio.new_event_loop()
    try:
        stream = best_us(lambda k: loop.run_until_complete(httpstream_run(k)), n)
    finally:
        loop.close()
    print(f"HttpStream feed + take, 2 chunks:  {stream:6.3f}")


if __name__ == "__main__":
    main()
