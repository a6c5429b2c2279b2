"""Live-call takeover: the silence a caller hears when the owner dies or hands over, and what
checkpoints cost per call (docs/ha.md).

Processes: a redis-server, the emulator, an owner and a standby (``ivr run`` with a Redis
cluster). Each caller hears a continuous tone prompt; the owner is killed with SIGKILL
(``kill``) or stopped with SIGTERM while the standby waits (``handover``). The gap is read
from the emulator's record of what each caller heard (timing preserved): the longest stretch
without the tone around the takeover.

The checkpoint cost runs a flow that takes a step every ~0.25 s per call, with checkpoints in
memory (none survive the process), in files beside the local lease (the default without Redis)
and in Redis, and reports the worker's CPU per call-second and the checkpoint writes and
round trips (batches) per call-second (the worker's own counters).

    python bench/bench_takeover.py                 # 20 calls; kill and handover; cost at 50 calls
    python bench/bench_takeover.py --calls 50 --cost-calls 100 --seconds 20

Needs redis-server (Debian package). Reported in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _harness import RATE, SECRET, free_port, machine_info, proc_sample

TONE_FLOW = "steps:\n  - answer\n  - play: tone.wav\n"
STEPPING_FLOW = """\
steps:
  - answer
  - set: {n: 0}
  - id: again
    set: {n: "{{ n | int + 1 }}"}
  - pause: 0.25
  - goto: again
"""


class Procs:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - the child writes it until the end
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
                                env={"IVR_CLIENT_SECRET": SECRET, "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1",
                                     "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        self.children.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.children):
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def write_worker(folder: Path, name: str, emulator: str, metrics: int, flow: str, redis: str | None,
                 local_checkpoints: bool = True) -> Path:
    cluster = f"cluster: {{redis_url: '{redis}', lease_ttl: 1.0, lease_dir: {folder / name}}}\n" if redis else \
        f"cluster: {{lease_dir: {folder / name}, local_checkpoints: {str(local_checkpoints).lower()}}}\n"
    path = folder / f"{name}.yaml"
    path.write_text(f"pbx: {{url: '{emulator}', client_id: '900', client_secret_env: IVR_CLIENT_SECRET}}\n"
                    f"routes: [{{route_point: '800', flow: {flow}}}]\nrecords: {name}-calls.jsonl\n"
                    f"metrics: {{port: {metrics}}}\nspeech: {{tts: tone}}\nmax_calls: 2000\n" + cluster)
    return path


async def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def ready(session: aiohttp.ClientSession, port: int) -> bool:
    try:
        async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def heard(session: aiohttp.ClientSession, emulator: str, callid: int) -> float:
    async with session.get(f"{emulator}/_emulator/calls/{callid}") as resp:
        return float((await resp.json())["heard_seconds"])


def longest_gap(pcm: np.ndarray, start_s: float) -> float:
    """Longest run (s) without the tone after ``start_s`` (the tone never dips below 500)."""
    x = np.abs(pcm[int(start_s * RATE):].astype(np.int32))
    frames = x[: len(x) // 80 * 80].reshape(-1, 80).max(axis=1) > 500  # 10 ms blocks with tone
    best = run = 0
    for loud in frames:
        run = 0 if loud else run + 1
        best = max(best, run)
    return best * 0.01


async def takeover_gaps(folder: Path, calls: int, mode: str) -> list[float]:
    procs = Procs(folder)
    redis_port, emu_port = free_port(), free_port()
    emulator = f"http://127.0.0.1:{emu_port}"
    redis = f"redis://127.0.0.1:{redis_port}/0"
    t = np.arange(RATE * 120) / RATE
    sf.write(folder / "tone.wav", (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16), RATE, subtype="PCM_16")
    (folder / "tone.yaml").write_text(TONE_FLOW)
    try:
        procs.start([shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--save", "",
                     "--appendonly", "no"], "redis")
        procs.start([sys.executable, "-m", "ivr.cli", "emulator", "--port", str(emu_port), "--client-id", "900",
                     "--client-secret", SECRET, "--ring-seconds", "0.1"], "emulator")
        ports = free_port(), free_port()
        owner = procs.start([sys.executable, "-m", "ivr.cli", "run", "--config",
                             str(write_worker(folder, "a", emulator, ports[0], "tone.yaml", redis))], "a")
        async with aiohttp.ClientSession() as session:
            await wait_until(lambda: ready(session, ports[0]), 60, "the owner")
            procs.start([sys.executable, "-m", "ivr.cli", "run", "--config",
                         str(write_worker(folder, "b", emulator, ports[1], "tone.yaml", redis))], "b")
            await wait_until(lambda: asyncio.sleep(0, "standby:" in (folder / "b.log").read_text()), 60, "the standby")
            callids = []
            for i in range(calls):
                async with session.post(f"{emulator}/_emulator/calls", json={"from": f"+4930{i:06d}", "to": "800"}) as r:
                    callids.append(int((await r.json())["callid"]))

            async def all_hear(seconds: float) -> bool:
                return all(h >= seconds for h in await asyncio.gather(*(heard(session, emulator, c) for c in callids)))

            await wait_until(lambda: all_hear(2.0), 120, "every caller to hear the tone")
            before = {c: await heard(session, emulator, c) for c in callids}
            owner.send_signal(signal.SIGKILL if mode == "kill" else signal.SIGTERM)
            await wait_until(lambda: ready(session, ports[1]), 60, "the standby to take over")

            async def resumed() -> bool:
                now = await asyncio.gather(*(heard(session, emulator, c) for c in callids))
                return all(h >= before[c] + 3.0 for c, h in zip(callids, now, strict=True))

            await wait_until(resumed, 120, "every call's audio to resume")
            gaps = []
            for c in callids:
                async with session.get(f"{emulator}/_emulator/calls/{c}/heard.wav") as resp:
                    pcm, _ = sf.read(io.BytesIO(await resp.read()), dtype="int16")
                gaps.append(longest_gap(pcm, max(0.0, before[c] - 1.0)))
            return gaps
    finally:
        procs.stop_all()


async def checkpoint_cost(folder: Path, calls: int, seconds: float, store: str) -> dict[str, float]:
    """``store``: memory, files or redis."""
    procs = Procs(folder)
    redis_port, emu_port, metrics = free_port(), free_port(), free_port()
    emulator = f"http://127.0.0.1:{emu_port}"
    redis = f"redis://127.0.0.1:{redis_port}/0" if store == "redis" else None
    (folder / "steps.yaml").write_text(STEPPING_FLOW)
    try:
        if redis:
            procs.start([shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--save", "",
                         "--appendonly", "no"], "redis")
        procs.start([sys.executable, "-m", "ivr.cli", "emulator", "--port", str(emu_port), "--client-id", "900",
                     "--client-secret", SECRET, "--ring-seconds", "0.1"], "emulator")
        worker = procs.start([sys.executable, "-m", "ivr.cli", "run", "--config",
                              str(write_worker(folder, "w", emulator, metrics, "steps.yaml", redis,
                                               local_checkpoints=store == "files"))], "w")
        async with aiohttp.ClientSession() as session:
            await wait_until(lambda: ready(session, metrics), 60, "the worker")
            for i in range(calls):
                async with session.post(f"{emulator}/_emulator/calls", json={"from": f"+4931{i:06d}", "to": "800"}):
                    pass
            await asyncio.sleep(3.0)  # every call in its loop

            async def counters() -> tuple[float, float]:
                async with session.get(f"http://127.0.0.1:{metrics}/metrics") as resp:
                    text = await resp.text()
                writes = float(re.search(r"^ivr_checkpoint_writes_total (\S+)", text, re.M).group(1))  # type: ignore[union-attr]
                flushes = float(re.search(r"^ivr_checkpoint_flushes_total (\S+)", text, re.M).group(1))  # type: ignore[union-attr]
                return writes, flushes

            w0, f0 = await counters()
            cpu0, t0 = proc_sample(worker.pid), time.monotonic()
            await asyncio.sleep(seconds)
            cpu1, t1 = proc_sample(worker.pid), time.monotonic()
            w1, f1 = await counters()
        call_seconds = calls * (t1 - t0)
        return {"cpu_ms_per_call_s": 1000 * (cpu1.cpu_s - cpu0.cpu_s) / call_seconds,
                "writes_per_call_s": (w1 - w0) / call_seconds, "round_trips_per_call_s": (f1 - f0) / call_seconds}
    finally:
        procs.stop_all()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20, help="callers during the takeover")
    parser.add_argument("--cost-calls", type=int, default=50, help="calls for the checkpoint cost")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds measured for the cost")
    parser.add_argument("--modes", default="kill,handover")
    parser.add_argument("--stores", default="memory,files,redis", help="checkpoint stores whose cost to measure")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("bench_takeover: redis-server is missing (apt-get install redis-server)", file=sys.stderr)
        return 2
    print(machine_info())
    for mode in [m for m in args.modes.split(",") if m in ("kill", "handover")]:
        with tempfile.TemporaryDirectory() as tmp:
            gaps = await takeover_gaps(Path(tmp), args.calls, mode)
        print(f"takeover ({mode}, {args.calls} calls, lease_ttl 1 s): silence heard "
              f"p50 {pct(gaps, 50):.2f} s, p95 {pct(gaps, 95):.2f} s, max {max(gaps):.2f} s")
    for store in [s for s in args.stores.split(",") if s in ("memory", "files", "redis")]:
        with tempfile.TemporaryDirectory() as tmp:
            cost = await checkpoint_cost(Path(tmp), args.cost_calls, args.seconds, store)
        print(f"checkpoints in {store} ({args.cost_calls} calls, a step every ~0.25 s): "
              f"{cost['cpu_ms_per_call_s']:.2f} CPU-ms per call-second, {cost['writes_per_call_s']:.2f} checkpoints "
              f"and {cost['round_trips_per_call_s']:.2f} round trips (batches) per call-second")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
