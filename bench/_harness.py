"""Shared pieces of the process-level benchmarks (bench_concurrency.py, bench_latency.py).

Starts the emulator and the worker as separate processes (``python -m ivr.cli emulator`` /
``python -m ivr.cli run``), writes the worker's config, flow and prompts into a scratch
folder, reads process accounting from /proc, and turns the emulator's per-chunk arrival
times of the IVR's audio into jitter figures. No timing is asserted here: scripts print.
"""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivr.audio import generate_dtmf  # noqa: E402

RATE = 8000
BYTES_PER_SECOND = 16_000
SECRET = "bench-secret"  # a throwaway secret for a loopback emulator
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the machine ----------------------------------------------------------------------------


def machine_info() -> str:
    """CPU model, cores and the versions that matter, as two lines."""
    import aiohttp

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"cpu {cpu} ({os.cpu_count()} cores)  {platform.platform()}\n"
        f"python {platform.python_version()}  numpy {np.__version__}  aiohttp {aiohttp.__version__}"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ProcSample:
    cpu_s: float  # user + system CPU seconds since the process started
    sys_s: float  # of which in the kernel (system calls: sockets, epoll)
    rss: int  # resident set size, bytes
    at: float  # time.monotonic()


def proc_sample(pid: int) -> ProcSample:
    """utime+stime and RSS of ``pid`` from /proc (Linux)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)
    sys_s = int(fields[12]) / CLK_TCK
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return ProcSample(cpu, sys_s, rss, time.monotonic())


# --- audio the caller and the IVR use -------------------------------------------------------


def voice_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced, speech-like signal (harmonics of ~150 Hz, syllable-rate modulation, noise)
    that webrtcvad calls speech; int16 at 8 kHz."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    f0 = 150 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    x = 6000 * x + rng.normal(0, 300, n)
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def wav_bytes(pcm: np.ndarray) -> bytes:
    """8 kHz 16-bit WAV bytes, as the emulator's caller API takes them."""
    from ivr.speech.pcm import wav_bytes as encode

    return encode(pcm, RATE)


def dtmf_wav(digit: str) -> bytes:
    """An in-band key press as the caller's audio: 100 ms tone, 100 ms silence."""
    return wav_bytes(generate_dtmf(digit, 100, 100))


# --- processes ------------------------------------------------------------------------------


class Stack:
    """Emulator + worker as two child processes, in a scratch folder."""

    def __init__(self, workdir: Path, flow_yaml: str, prompts: dict[str, np.ndarray], *,
                 lead_ms: int = 80, batch: int = 2, log_level: str = "INFO", python: str = sys.executable,
                 worker_tree: str | None = None, pbx_extra: dict[str, str] | None = None, tls: bool = False,
                 worker_nice: int | None = None, worker_cpu: int | None = None,
                 repeat_upserts: bool = False, ivr_extra: list[str] | None = None) -> None:
        self.dir = workdir
        # The emulator repeats Upserts every 750 ms by default, as real PBXs do (each costs the
        # worker a GET); the benches measured without them, and keep that unless asked.
        self.repeat_upserts = repeat_upserts
        self.port = free_port()
        self.metrics_port = free_port()
        # tls: the emulator serves HTTPS/WSS with a throwaway CA's certificate (trustme, in the
        # test extra); the worker verifies it (verify_tls: the CA file), as against a real 3CX.
        self.tls = tls
        self.ssl: ssl.SSLContext | None = None
        if tls:
            import trustme

            workdir.mkdir(parents=True, exist_ok=True)
            ca = trustme.CA()
            ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
            ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(workdir / "server.pem"))
            self.ssl = ssl.create_default_context(cafile=str(workdir / "ca.pem"))
            pbx_extra = {**(pbx_extra or {}), "verify_tls": str(workdir / "ca.pem")}
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.python = python
        self.log_level = log_level
        self.worker_tree = worker_tree  # run the worker from another source tree (before/after)
        self.worker_nice = worker_nice  # the worker's scheduling priority (None: inherited)
        self.worker_cpu = worker_cpu  # the one CPU the worker runs on (the caller keeps itself off it)
        self.emulator: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        (workdir / "audio").mkdir(parents=True, exist_ok=True)
        for name, pcm in prompts.items():
            (workdir / "audio" / name).write_bytes(wav_bytes(pcm))
        (workdir / "flow.yaml").write_text(flow_yaml)
        (workdir / "ivr.yaml").write_text(
            f"pbx:\n  url: {self.url}\n  client_id: '900'\n  client_secret_env: IVR_BENCH_SECRET\n"
            f"  outbound_lead_ms: {lead_ms}\n  outbound_batch_frames: {batch}\n" +
            "".join(f"  {k}: {v}\n" for k, v in (pbx_extra or {}).items()) +
            "routes:\n  - route_point: '800'\n    flow: flow.yaml\n"
            "max_calls: 5000\nrecords: var/calls.jsonl\nrecordings_dir: var/recordings\n"
            f"audio_dirs: [audio]\nmetrics: {{port: {self.metrics_port}}}\n" +
            "".join(f"{line}\n" for line in ivr_extra or [])  # other top-level ivr.yaml settings
        )

    def start(self, timeout: float = 30) -> None:
        env = dict(os.environ, IVR_BENCH_SECRET=SECRET)
        self.emulator = subprocess.Popen(
            [self.python, "-m", "ivr.cli", "emulator", "--port", str(self.port), "--client-secret", SECRET,
             "--extensions", "100-105", "--ring-seconds", "0.1",
             "--repeat-upserts" if self.repeat_upserts else "--no-repeat-upserts"]
            + (["--tls-cert", "server.pem"] if self.tls else []),
            stdout=open(self.dir / "emulator.log", "wb"), stderr=subprocess.STDOUT, cwd=self.dir, env=env,
        )
        _wait_http(f"{self.url}/_emulator/health", timeout, self.emulator, self.ssl)
        self.worker = subprocess.Popen(
            [self.python, "-m", "ivr.cli", "run", "--config", "ivr.yaml", "--log-level", self.log_level],
            stdout=open(self.dir / "worker.log", "wb"), stderr=subprocess.STDOUT, cwd=self.dir,
            env=dict(env, PYTHONPATH=self.worker_tree) if self.worker_tree else env,
            preexec_fn=None if self.worker_cpu is None else partial(os.sched_setaffinity, 0, {self.worker_cpu}),
        )
        _wait_http(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout, self.worker)
        if self.worker_nice is not None:  # ahead of the emulator and callers, as on its own machine
            try:
                os.setpriority(os.PRIO_PROCESS, self.worker.pid, self.worker_nice)
            except PermissionError:
                self.stop()
                raise SystemExit(f"--worker-nice {self.worker_nice}: raising a priority needs root") from None

    def stop(self) -> None:
        for proc in (self.worker, self.emulator):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def records(self) -> list[dict]:
        import json

        path = self.dir / "var" / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_http(url: str, timeout: float, proc: subprocess.Popen, context: ssl.SSLContext | None = None) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[3]} exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


async def sleep_until(t: float) -> None:
    """Sleep until loop time ``t``."""
    delay = t - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


# --- what the emulator heard ----------------------------------------------------------------


@dataclass
class EarStats:
    """Arrival-side figures of the IVR's audio over some calls."""

    jitter_ms: np.ndarray  # |inter-arrival time - audio duration of the previous chunk|, per chunk
    depth_ms: np.ndarray  # audio still queued at the emulator when a chunk arrived
    gaps: int  # times the emulator's buffer ran dry inside a prompt (the caller heard a gap)
    gap_ms: float  # their total length
    chunks: int
    bytes: int


def ear_stats(arrivals: list[dict], t_from: list[float], t_to: list[float], max_gap_s: float = 0.5) -> EarStats:
    """Jitter at the emulator's ear from ``/arrivals`` answers, each restricted to its call's
    window [t_from, t_to] (seconds since call start). A silence longer than ``max_gap_s`` is a
    pause between prompts, not a gap."""
    jit: list[np.ndarray] = []
    depth: list[np.ndarray] = []
    gaps = 0
    gap_s = 0.0
    chunks = nbytes = 0
    for arr, lo, hi in zip(arrivals, t_from, t_to):
        t = np.asarray(arr["t"], dtype=float)
        b = np.asarray(arr["bytes"], dtype=float)
        keep = (t >= lo) & (t <= hi)
        if arr.get("gap_after") is not None:  # the hook dropped chunks: no pair across the hole
            keep[arr["gap_after"] + 1] = False
        idx = np.flatnonzero(keep)
        if idx.size < 2:
            continue
        chunks += idx.size
        nbytes += int(b[idx].sum())
        pairs = idx[1:][np.diff(idx) == 1]  # consecutive chunks both inside the window
        d = (t[pairs] - t[pairs - 1]) - b[pairs - 1] / BYTES_PER_SECOND
        jit.append(np.abs(d[d < max_gap_s]) * 1000)
        # Play-out as the emulator does it, from the call's first chunk (the lead is built at
        # the start of each prompt): each chunk plays at arrival or behind queued audio.
        play_end = t[0] if t.size else 0.0
        dep = []
        hole = arr.get("gap_after")
        for i in range(t.size):
            if hole is not None and i == hole + 1:
                play_end = t[i]  # chunks are missing here: restart the play-out clock
            ahead = play_end - t[i]
            if ahead < 0:
                if keep[i] and -ahead < max_gap_s:
                    gaps += 1
                    gap_s += -ahead
                play_end = t[i]
                ahead = 0.0
            if keep[i]:
                dep.append(ahead)
            play_end += b[i] / BYTES_PER_SECOND
        depth.append(np.asarray(dep) * 1000)
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    return EarStats(cat(jit), cat(depth), gaps, gap_s * 1000, chunks, nbytes)


def pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) if len(a) else float("nan")
