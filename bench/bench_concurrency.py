"""N simultaneous calls through emulator -> worker, each in its own process.

    python bench/bench_concurrency.py                       # 50 calls
    python bench/bench_concurrency.py --calls 50,200,500    # one run per N
    python bench/bench_concurrency.py --calls 200 --profile # + py-spy SVG of the worker

Each call runs bench's flow: answer, record (mode both, beep) while the caller speaks and
presses # (PBX DTMF event), a gather over a 30 s prompt that the caller ends with an in-band
"1" (tone in its audio), then a looping 30 s prompt (no barge-in) while the caller speaks a
second every 4 s, until the driver hangs up. DTMF detection and VAD run on every caller
frame. Calls are placed at ``--rate`` per second and each lasts as long as the first: they hang
up at the same rate, the first ``--hold`` seconds after the last one was placed (with
``--hang-up-together``, as before 2026-11-25: all at that moment). The steady-state window
starts 6 s after the last call was placed (every call is in the looping prompt) and ends 0.5 s
before the first hang-up.

Figures: worker CPU-ms per call-second and RSS per call (from /proc over the window), the
pacer's per-send lateness (worker call records, and in the window from its /metrics), late
sends (the pacer woke more than a frame late: not heard while the PBX still held audio) and
underruns (a send found the PBX had played everything: a gap heard), whole calls; and, at the
emulator's ear, the inter-arrival jitter of the IVR's audio, the buffer depth when a chunk
arrives and gaps heard.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
from _harness import (
    Stack,
    dtmf_wav,
    ear_stats,
    machine_info,
    pct,
    proc_sample,
    sleep_until,
    voice_like,
    wav_bytes,
)

from ivr.pbx.outbound import LATENESS_BUCKETS_MS, hist_quantile

FLOW = """\
name: bench
steps:
  - answer
  - record: {file: "rec/{{ call.id }}.wav", mode: both, max_seconds: 4, silence_end: 2, stop_keys: "#", beep: true}
  - gather: {prompt: prompt30.wav, max_digits: 1, first_digit_timeout: 30, into: key}
  - play: {files: [prompt30.wav], loop: 20, barge_in: false}
  - hangup
"""
SPEAK_EVERY = 4.0
SETTLE = 6.0  # after the last call was placed, every call is in the looping prompt


async def drive_call(http: aiohttp.ClientSession, url: str, i: int, start_at: float, end_at: float,
                     speech: bytes, key1: bytes, out: list) -> None:
    """One caller: dial, speak, press keys, hang up at ``end_at`` (loop time)."""
    await sleep_until(start_at)
    async with http.post(f"{url}/_emulator/calls", json={"from": f"+4930{i:07d}", "to": "800"}) as r:
        callid = (await r.json())["callid"]
    t0 = asyncio.get_running_loop().time()
    out.append((callid, t0))
    steps = [(0.6, "audio", speech), (2.8, "dtmf", "#"), (5.0, "audio", key1)]
    k = 8.0
    while t0 + k + 1.2 < end_at:
        steps.append((k, "audio", speech))
        k += SPEAK_EVERY
    for at, kind, what in steps:
        await sleep_until(t0 + at)
        if kind == "audio":
            async with http.post(f"{url}/_emulator/calls/{callid}/audio", data=what) as r:
                await r.read()
        else:
            async with http.post(f"{url}/_emulator/calls/{callid}/dtmf", json={"digits": what}) as r:
                await r.read()
    await sleep_until(end_at)
    async with http.post(f"{url}/_emulator/calls/{callid}/hangup") as r:
        await r.read()


async def pacer_lateness(http: aiohttp.ClientSession, port: int) -> list[int]:
    """The worker's ivr_pacer_lateness_seconds as per-bucket counts (LATENESS_BUCKETS_MS, then
    the rest): two scrapes give the pacing of the window alone, without the calls' ramp-up."""
    async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    cumulative = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("ivr_pacer_lateness_seconds_bucket")]
    return [int(c - p) for p, c in zip([0.0, *cumulative[:-1]], cumulative)]


async def run_n(stack: Stack, n: int, rate: float, hold: float, profile: Path | None, fmt: str = "flamegraph",
                profile_rate: int = 100, together: bool = False) -> dict:
    loop = asyncio.get_running_loop()
    speech, key1 = wav_bytes(voice_like(1.0)), dtmf_wav("1")
    conn = aiohttp.TCPConnector(limit=200, ssl=stack.ssl if stack.ssl is not None else True)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as http:
        # Warm-up call: imports, prompt cache, first-call allocations are not per-call costs.
        warm: list = []
        t = loop.time()
        await drive_call(http, stack.url, 0, t, t + 6.5, speech, key1, warm)
        await asyncio.sleep(1.0)
        base = proc_sample(stack.worker.pid)
        start = loop.time() + 0.2
        last_start = start + (n - 1) / rate
        end_at = last_start + hold
        win_from, win_to = last_start + SETTLE, end_at - 0.5
        placed: list = []
        # Every call as long as the first, so they end at the rate they came (a mass hang-up
        # of every call in one instant is a stress of its own, kept behind --hang-up-together).
        tasks = [asyncio.create_task(drive_call(http, stack.url, 1 + i, start + i / rate,
                                                end_at if together else end_at + i / rate, speech, key1, placed))
                 for i in range(n)]
        await sleep_until(win_from)
        lat0 = await pacer_lateness(http, stack.metrics_port)
        w0, e0 = proc_sample(stack.worker.pid), proc_sample(stack.emulator.pid)
        spy = None
        if profile is not None:
            secs = max(1, int(win_to - win_from - 0.5))
            spy = subprocess.Popen(["py-spy", "record", "-o", str(profile), "--pid", str(stack.worker.pid),
                                    "--duration", str(secs), "--rate", str(profile_rate), "--nonblocking", "--format", fmt],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await sleep_until((win_from + win_to) / 2)
        mid = proc_sample(stack.worker.pid)
        await sleep_until(win_to)
        w1, e1 = proc_sample(stack.worker.pid), proc_sample(stack.emulator.pid)
        window_hist = [b - a for a, b in zip(lat0, await pacer_lateness(http, stack.metrics_port))]
        await asyncio.gather(*tasks)
        if spy is not None:
            spy.wait(timeout=60)
        # Let the worker finish its calls and write the records.
        deadline = time.monotonic() + 30
        while len(stack.records()) < n + 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        arrivals = []
        for callid, _ in placed:
            async with http.get(f"{stack.url}/_emulator/calls/{callid}/arrivals") as r:
                arrivals.append(await r.json())
    window = w1.at - w0.at
    ear = ear_stats(arrivals, [win_from - t0 for _, t0 in placed], [win_to - t0 for _, t0 in placed])
    records = [r for r in stack.records() if r["caller_number"] != "+49300000000"]
    current = all("late_sends" in r["metrics"] for r in records)  # records of this tree's worker
    hist = np.sum([r["metrics"].get("lateness_hist", [0]) for r in records if r["metrics"].get("lateness_hist")], axis=0)
    good = sum(1 for r in records if r.get("outcome") == "caller_hangup" and "1" in "".join(r.get("digits", []))
               and r.get("recordings"))
    return {
        "n": n,
        "window_s": window,
        "cpu_ms_per_call_s": (w1.cpu_s - w0.cpu_s) * 1000 / (window * n),
        "worker_cpu_pct": (w1.cpu_s - w0.cpu_s) / window * 100,
        "worker_sys_share": (w1.sys_s - w0.sys_s) / max(w1.cpu_s - w0.cpu_s, 1e-9),
        "emulator_cpu_pct": (e1.cpu_s - e0.cpu_s) / window * 100,
        "rss_base_mb": base.rss / 2**20,
        "rss_mid_mb": mid.rss / 2**20,
        "kb_per_call": (mid.rss - base.rss) / 1024 / n,
        "records": len(records),
        "flows_ok": good,
        "late_p50": hist_quantile(list(hist), 0.5) if np.size(hist) > 1 else None,
        "late_p99": hist_quantile(list(hist), 0.99) if np.size(hist) > 1 else None,
        "late_max": max((r["metrics"].get("max_lateness_ms", 0) for r in records), default=0),
        "win_late_p50": hist_quantile(window_hist, 0.5),
        "win_late_p99": hist_quantile(window_hist, 0.99),
        # None ("-" in the table) where a worker from an older tree (--worker-tree) has no such
        # figure: no lateness metric, or records whose "underruns" were late sends.
        "win_late_over_40": sum(window_hist[LATENESS_BUCKETS_MS.index(40) + 1:]) if window_hist else None,
        "late_sends": sum(r["metrics"]["late_sends"] for r in records) if current else None,
        "underruns": sum(r["metrics"]["underruns"] for r in records) if current else None,
        "ear_jit_p50": pct(ear.jitter_ms, 50),
        "ear_jit_p99": pct(ear.jitter_ms, 99),
        "ear_depth_p1": pct(ear.depth_ms, 1),
        "ear_gaps": ear.gaps,
        "ear_gap_ms": ear.gap_ms,
        "ear_audio_ratio": ear.bytes / 16000 / max(1e-9, n * (win_to - win_from)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", default="50", help="comma list of concurrent call counts (default 50)")
    ap.add_argument("--rate", type=float, default=50, help="calls placed per second (default 50)")
    ap.add_argument("--hold", type=float, default=15, help="seconds after the last call is placed until the first hangs up")
    ap.add_argument("--lead-ms", type=int, default=80, help="the worker's outbound_lead_ms")
    ap.add_argument("--batch", type=int, default=2, help="the worker's outbound_batch_frames (frames per pacer wake-up)")
    ap.add_argument("--pbx", action="append", default=[], metavar="KEY=VALUE",
                    help="another pbx: setting of the worker, e.g. --pbx inbound_block_ms=0 --pbx outbound_tick_ms=0")
    ap.add_argument("--ivr", action="append", default=[], metavar="YAML",
                    help="another top-level ivr.yaml line, e.g. --ivr 'cluster: {local_checkpoints: false}'")
    ap.add_argument("--worker-tree", help="run the worker from this source tree (e.g. an unpacked `git archive HEAD`)")
    ap.add_argument("--log-level", default="INFO", help="the worker's log level (default INFO, as deployed)")
    ap.add_argument("--profile", action="store_true", help="py-spy record the worker over the window (SVG in bench/)")
    ap.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second (default 100)")
    ap.add_argument("--profile-format", default="flamegraph", choices=["flamegraph", "raw", "speedscope"],
                    help="py-spy output: flamegraph (SVG), raw (collapsed stacks, text) or speedscope")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, records)")
    ap.add_argument("--worker-nice", type=int, metavar="N",
                    help="run the worker at this nice level (e.g. -20, as root), ahead of the emulator and the "
                         "callers: on a machine too small for all three, as if the PBX ran elsewhere")
    ap.add_argument("--worker-cpu", type=int, metavar="CPU",
                    help="pin the worker to this CPU and the emulator and the callers to the others: one core "
                         "of its own, as if the PBX ran elsewhere (needs no root)")
    ap.add_argument("--hang-up-together", action="store_true",
                    help="every call hangs up in the same instant (default: at the rate they came, each as long "
                         "as the first)")
    ap.add_argument("--tls", action="store_true",
                    help="HTTPS/WSS between worker and emulator (a throwaway CA, verified), as with a real 3CX")
    ap.add_argument("--repeat-upserts", action="store_true",
                    help="the emulator repeats Upserts every 750 ms, as real PBXs do (each costs the worker a GET); "
                         "default off, as the results were measured")
    args = ap.parse_args()
    if args.hold < SETTLE + 2:
        ap.error(f"--hold must be at least {SETTLE + 2} s")
    if args.worker_cpu is not None:  # this driver (and the emulator, inheriting it) off the worker's CPU
        cpus = os.sched_getaffinity(0)
        if args.worker_cpu not in cpus or len(cpus) < 2:
            ap.error(f"--worker-cpu {args.worker_cpu}: needs that CPU and at least one other (this process may use "
                     f"{sorted(cpus)})")
        os.sched_setaffinity(0, cpus - {args.worker_cpu})
    print(machine_info())
    print(f"flow: record(both) + gather(30 s prompt, in-band key) + looping prompt; caller speaks 1 s every "
          f"{SPEAK_EVERY:.0f} s; lead {args.lead_ms} ms, batch {args.batch}; rate {args.rate}/s; hold {args.hold} s"
          f"{'; all hang up together' if args.hang_up_together else ''}"
          f"{'; HTTPS/WSS' if args.tls else ''}"
          f"{f'; worker at nice {args.worker_nice}' if args.worker_nice is not None else ''}"
          f"{f'; worker alone on CPU {args.worker_cpu}' if args.worker_cpu is not None else ''}")
    prompts = {"prompt30.wav": voice_like(30.0, seed=1) // 2}
    rows = []
    for n in [int(x) for x in args.calls.split(",") if x.strip()]:
        work = Path(tempfile.mkdtemp(prefix=f"ivr-bench-{n}-"))
        stack = Stack(work, FLOW, prompts, lead_ms=args.lead_ms, batch=args.batch, log_level=args.log_level,
                      worker_tree=args.worker_tree, pbx_extra=dict(kv.split("=", 1) for kv in args.pbx), tls=args.tls,
                      worker_nice=args.worker_nice, worker_cpu=args.worker_cpu, repeat_upserts=args.repeat_upserts,
                      ivr_extra=args.ivr)
        try:
            stack.start()
            ext = {"flamegraph": "svg", "raw": "txt", "speedscope": "json"}[args.profile_format]
            prof = Path(__file__).with_name(f"profile-{n}.{ext}") if args.profile else None
            row = asyncio.run(run_n(stack, n, args.rate, args.hold, prof, args.profile_format, args.profile_rate,
                                    together=args.hang_up_together))
        finally:
            stack.stop()
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
            else:
                print(f"  scratch folder: {work}")
        rows.append(row)
        print_row(row)
    print_table(rows)


def print_row(r: dict) -> None:
    print(f"N={r['n']}: {r['records']} records, {r['flows_ok']} flows complete; window {r['window_s']:.1f} s; "
          f"worker {r['worker_cpu_pct']:.0f}% CPU ({r['worker_sys_share']:.0%} in the kernel), "
          f"emulator {r['emulator_cpu_pct']:.0f}% CPU", flush=True)


def print_table(rows: list[dict]) -> None:
    f = lambda v, p=1: "-" if v is None or v != v else f"{v:.{p}f}"  # noqa: E731
    print()
    print("| N | CPU-ms/call-s | worker CPU | emulator CPU | KB/call | pacer late p50/p99/max ms | window: p50/p99, > 40 ms "
          "| late sends > 20 ms | underruns (PBX ran dry) | ear jitter p50/p99 ms | ear depth p1 ms | ear gaps (ms) "
          "| audio ratio | flows ok |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {f(r['cpu_ms_per_call_s'], 2)} | {f(r['worker_cpu_pct'], 0)}% | {f(r['emulator_cpu_pct'], 0)}% "
              f"| {f(r['kb_per_call'], 0)} | {f(r['late_p50'])}/{f(r['late_p99'])}/{f(r['late_max'])} "
              f"| {f(r['win_late_p50'])}/{f(r['win_late_p99'])}, {f(r['win_late_over_40'], 0)} | {f(r['late_sends'], 0)} "
              f"| {f(r['underruns'], 0)} | {f(r['ear_jit_p50'], 2)}/{f(r['ear_jit_p99'], 2)} | {f(r['ear_depth_p1'])} "
              f"| {r['ear_gaps']} ({f(r['ear_gap_ms'], 0)}) | {f(r['ear_audio_ratio'], 3)} | {r['flows_ok']}/{r['n']} |")


if __name__ == "__main__":
    main()
