"""Latencies a caller notices, measured at the emulator's ear (worker and emulator as processes).

    python bench/bench_latency.py                 # 30 trials, one call at a time
    python bench/bench_latency.py --trials 100 --lead-ms 40

Per trial, one call runs this flow and the driver acts at fixed times:

1. a gather over a 10 s prompt: **arrival -> first prompt byte** (call creation at the
   emulator to the first chunk of IVR audio arriving there); at +1.0 s the caller presses 5
   (a PBX DTMF event): **DTMF -> prompt stop** = the event's time to the last chunk of IVR
   audio arriving;
2. one second of pause, then a 10 s prompt with barge-in; at +3.0 s the caller starts to
   speak (a 1.5 s voice WAV): **speech onset -> prompt stop** = the onset in the caller's
   stream to the last chunk arriving;
3. if the speech gather exists (``ivr/call/speech_input.py``): two seconds of pause (the
   barge-in speech is over), a gather with ``speech:`` and no prompt; the caller says "sales"
   (the offline TTS; without it espeak-ng or a voice-like signal); a short marker prompt
   follows the gather: **end of speech -> gather result** = the
   end of the utterance to the marker's first chunk arriving (VAD hangover + STT + pacer).

"Last chunk arriving" is when the emulator stops receiving the prompt; the caller still hears
what the pacer sent ahead (the lead), so the audible stop is up to ``lead_ms`` later (its own
column). p50/p95 over the trials.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
from pathlib import Path

import aiohttp
import numpy as np
from _harness import ROOT, Stack, machine_info, sleep_until, voice_like, wav_bytes

FLOW = """\
name: latency
steps:
  - gather: {prompt: long.wav, max_digits: 1, first_digit_timeout: 20, into: key}
  - pause: 1
  - play: {files: [long.wav], barge_in: true}
  - pause: 2
"""
SPEECH_STEPS = """\
  - gather: {max_digits: 1, first_digit_timeout: 8, speech: {phrases: [sales, support]}, into: said}
  - play: marker.wav
"""
DTMF_AT, SPEAK_AT, SAY_AT = 1.0, 3.0, 5.6


async def utterance(workdir: Path) -> bytes:
    """'sales' as the offline TTS says it (what `ivr call --say` and the flow tests use; the
    STT recognises it), trimmed to the speech so the emulator's "end" is the end of speech.
    Without the speech extra: espeak-ng if installed, else a voice-like second."""
    try:
        from ivr.speech import get_tts, synthesize_all

        pcm = await synthesize_all(get_tts("hibari"), "sales")
        loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 300)
        return wav_bytes(pcm[loud[0] : loud[-1] + 1] if loud.size else pcm)
    except Exception:  # no hibari: fall back
        pass
    if shutil.which("espeak-ng"):
        out = workdir / "sales.wav"
        subprocess.run(["espeak-ng", "-w", str(out), "sales"], check=True, capture_output=True)
        return out.read_bytes()
    return wav_bytes(voice_like(0.6, seed=3))


def last_before(t: np.ndarray, start: float, horizon: float) -> float | None:
    """Latest arrival in [start - 0.1, start + horizon] (the prompt's last chunk), or None."""
    sel = t[(t >= start - 0.1) & (t <= start + horizon)]
    return float(sel.max()) if sel.size else None


def audible_end(t: np.ndarray, b: np.ndarray, upto: float) -> float:
    """When the caller stops hearing audio that arrived up to ``upto`` (emulator play-out)."""
    end = 0.0
    for ti, bi in zip(t, b):
        if ti > upto:
            break
        end = max(end, ti) + bi / 16000
    return end


async def trial(http: aiohttp.ClientSession, url: str, i: int, speech: bytes, said: bytes | None) -> dict:
    loop = asyncio.get_running_loop()
    async with http.post(f"{url}/_emulator/calls", json={"from": f"+4931{i:07d}", "to": "800"}) as r:
        callid = (await r.json())["callid"]
    t0 = loop.time()
    await sleep_until(t0 + DTMF_AT)
    async with http.post(f"{url}/_emulator/calls/{callid}/dtmf", json={"digits": "5"}) as r:
        await r.read()
    await sleep_until(t0 + SPEAK_AT)
    async with http.post(f"{url}/_emulator/calls/{callid}/audio", data=speech) as r:
        onset = (await r.json())["start"]
    said_end = None
    if said is not None:
        await sleep_until(t0 + SAY_AT)
        async with http.post(f"{url}/_emulator/calls/{callid}/audio", data=said) as r:
            said_end = (await r.json())["end"]
        await asyncio.sleep(said_end - (loop.time() - t0) + 3.0)
    else:
        await sleep_until(t0 + SPEAK_AT + 2.0)
    async with http.post(f"{url}/_emulator/calls/{callid}/hangup") as r:
        await r.read()
    async with http.get(f"{url}/_emulator/calls/{callid}/arrivals") as r:
        arr = await r.json()
    async with http.get(f"{url}/_emulator/calls/{callid}") as r:
        info = await r.json()
    t, b = np.asarray(arr["t"]), np.asarray(arr["bytes"], dtype=float)
    dtmf_t = next(e["t"] for e in info["log"] if e["event"] == "dtmf")
    out: dict = {"first_byte": t[0] * 1000 if t.size else None}
    last = last_before(t, dtmf_t, 0.9)
    out["dtmf_stop"] = None if last is None else (last - dtmf_t) * 1000
    out["dtmf_audible"] = None if last is None else (audible_end(t, b, last) - dtmf_t) * 1000
    last = last_before(t, onset, 0.9)
    out["barge_stop"] = None if last is None else (last - onset) * 1000
    out["barge_audible"] = None if last is None else (audible_end(t, b, last) - onset) * 1000
    if said_end is not None:
        after = t[t > said_end + 0.01]
        out["speech_result"] = (after[0] - said_end) * 1000 if after.size else None
    return out


async def run(stack: Stack, trials: int, speech_gather: bool, workdir: Path) -> list[dict]:
    speech = wav_bytes(voice_like(1.5, seed=2))
    said = await utterance(workdir) if speech_gather else None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        await trial(http, stack.url, 0, speech, said)  # warm-up: imports, prompt cache, STT model
        return [await trial(http, stack.url, 1 + i, speech, said) for i in range(trials)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--lead-ms", type=int, default=80, help="the worker's outbound_lead_ms")
    ap.add_argument("--batch", type=int, default=2, help="the worker's outbound_batch_frames")
    ap.add_argument("--no-speech-gather", action="store_true", help="skip the speech gather line")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()
    print(machine_info())
    speech_gather = not args.no_speech_gather and (ROOT / "ivr" / "call" / "speech_input.py").exists()
    work = Path(tempfile.mkdtemp(prefix="ivr-latency-"))
    prompts = {"long.wav": voice_like(10.0, seed=1) // 2, "marker.wav": voice_like(0.3, seed=4) // 2}
    stack = Stack(work, FLOW + (SPEECH_STEPS if speech_gather else ""), prompts, lead_ms=args.lead_ms,
                  batch=args.batch, log_level="WARNING")
    try:
        stack.start()
        rows = asyncio.run(run(stack, args.trials, speech_gather, work))
    finally:
        stack.stop()
        if args.keep:
            print(f"scratch folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{args.trials} trials, one call at a time, lead {args.lead_ms} ms, batch {args.batch}")
    print()
    print("| measure | p50 ms | p95 ms | max ms | n | goal (p95) |")
    print("|---|---|---|---|---|---|")
    lines = [
        ("arrival -> first prompt byte", "first_byte", "< 50"),
        ("DTMF -> prompt stop (last chunk in)", "dtmf_stop", "< 80"),
        ("DTMF -> audible stop (play-out end)", "dtmf_audible", ""),
        ("speech onset -> prompt stop (last chunk in)", "barge_stop", "< 150"),
        ("speech onset -> audible stop", "barge_audible", ""),
        ("end of speech -> gather result (next prompt's first byte)", "speech_result", ""),
    ]
    for label, key, goal in lines:
        vals = np.array([r[key] for r in rows if r.get(key) is not None], dtype=float)
        if key == "speech_result" and not speech_gather:
            print(f"| {label} | skipped: no speech gather (ivr/call/speech_input.py) | | | | |")
            continue
        if not vals.size:
            print(f"| {label} | - | - | - | 0 | {goal} |")
            continue
        print(f"| {label} | {np.percentile(vals, 50):.1f} | {np.percentile(vals, 95):.1f} | {vals.max():.1f} "
              f"| {vals.size} | {goal} |")


if __name__ == "__main__":
    main()
