"""Answering-machine detection: accuracy and decision time on greetings and hellos made here.

The set is synthesised on this machine, so anyone can rebuild it: espeak-ng in several voices
(and hibari's voice when hibari-tts is installed) speaking what people say when they pick up
("Hello?", "Anna speaking", "Hello? ... Hello?") and what voicemail and call-screening greetings
say (long sentences, choppy ones with pauses, some ending in a beep), each with a random lead-in
of silence, clean and with white noise at 20 dB and 10 dB SNR. Every case runs through
:class:`ivr.audio.amd.AnsweringMachineDetector` from the moment of answer.

    python bench/bench_amd.py            # table; --json for the raw rows; --seed N for another mix

Needs espeak-ng (Debian package). Reported in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivr.audio.amd import AnsweringMachineDetector
from ivr.speech.pcm import resample

RATE = 8000
VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-029", "en-us+f3", "en-gb+f4", "en-us+m7", "en-gb-x-rp+f2"]

HELLOS = [
    "Hello?", "Hello.", "Hi.", "Yes?", "Yeah, hello?", "Anna speaking.", "Hello, this is Tom.",
    "Smith residence.", "Hi, who's this?", "Good morning.",
]
GREETINGS = [
    "Hi, you've reached Anna. I can't take your call right now, please leave a message after the tone.",
    "The person you are calling is not available. Please leave your message after the beep.",
    "Hello, this is Tom Miller. Sorry I missed your call. Leave your name and number and I'll call you back.",
    "You have reached the voicemail of five five five, one two three four. Please record your message.",
    "Hi! It's Sarah. Leave a message.",
    "Thank you for calling Smith and Partners. Our office is closed. Please leave a message.",
]
# Greetings with pauses between short sentences (harder: each piece alone sounds like a hello).
CHOPPY = [
    ["Hi.", "This is Anna.", "Leave a message."],
    ["Hello.", "You've reached Tom.", "I'm not here right now.", "Please leave a message."],
    ["Hey!", "It's Mike.", "You know what to do."],
]


def espeak(text: str, voice: str, speed: int, folder: Path) -> np.ndarray:
    out = folder / "x.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(out), text], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    x, rate = sf.read(out, dtype="float32")
    return trim(np.clip(resample(x, rate, RATE) * 32767, -32768, 32767).astype(np.int16))


def trim(x: np.ndarray) -> np.ndarray:
    """Cut the engine's own leading and trailing silence: the pauses are the case's to set."""
    loud = np.nonzero(np.abs(x.astype(np.int32)) > 200)[0]
    return x[loud[0]:loud[-1] + 1] if loud.size else x


def hibari_voice():
    try:
        from ivr.speech.tts_hibari import HibariTTS
        tts = HibariTTS()
        tts._synth_blocking("Ready.", "heart", 1.0)
    except Exception:  # optional engine: the bench runs without it
        return None
    return lambda text: trim(tts._synth_blocking(text, "heart", 1.0))


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def beep(seconds: float = 0.4, freq: float = 1000.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (9000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def with_noise(x: np.ndarray, snr_db: float | None, rng: np.random.Generator) -> np.ndarray:
    if snr_db is None:
        return x
    speech = x.astype(np.float64)
    voiced = speech[np.abs(speech) > 300]
    power = float(np.mean(voiced**2)) if voiced.size else 1e6
    noise = rng.normal(0, np.sqrt(power / 10 ** (snr_db / 10)), size=len(x))
    return np.clip(speech + noise, -32768, 32767).astype(np.int16)


def build(rng: np.random.Generator, folder: Path) -> list[tuple[str, str, np.ndarray]]:
    """(expected, label, audio from the moment of answer)."""
    speakers: list[tuple[str, object]] = []
    for voice in VOICES:
        speed = int(rng.integers(150, 190))
        speakers.append((f"espeak:{voice}", lambda text, v=voice, s=speed: espeak(text, v, s, folder)))
    heart = hibari_voice()
    if heart is not None:
        speakers.append(("hibari:heart", heart))
    cases: list[tuple[str, str, np.ndarray]] = []
    for name, say in speakers:
        for text in HELLOS:
            lead = silence(float(rng.uniform(0.2, 0.9)))
            cases.append(("human", f"{name} {text!r}", np.concatenate([lead, say(text), silence(5)])))
        again = say("Hello?")
        cases.append(("human", f"{name} 'Hello? ... Hello?'",
                      np.concatenate([silence(0.4), again, silence(1.2), again, silence(4)])))
        for i, text in enumerate(GREETINGS):
            lead = silence(float(rng.uniform(0.1, 0.6)))
            tail = [silence(0.5), beep()] if i % 2 == 0 else []
            cases.append(("machine", f"{name} greeting {i}", np.concatenate([lead, say(text), *tail, silence(3)])))
        for i, pieces in enumerate(CHOPPY):
            parts: list[np.ndarray] = [silence(float(rng.uniform(0.1, 0.5)))]
            for piece in pieces:
                parts += [say(piece), silence(float(rng.uniform(0.3, 0.5)))]
            cases.append(("machine", f"{name} choppy {i}", np.concatenate([*parts, beep(), silence(3)])))
    return cases


def run(cases: list[tuple[str, str, np.ndarray]], rng: np.random.Generator) -> list[dict]:
    rows = []
    for snr in (None, 20.0, 10.0):
        for expected, label, audio in cases:
            x = with_noise(audio, snr, rng)
            n = len(x) // 160
            decision = AnsweringMachineDetector().feed_many(x[: n * 160].reshape(n, 160))
            assert decision is not None
            rows.append({"expected": expected, "label": label, "snr_db": snr, "result": decision.result,
                         "reason": decision.reason, "at": decision.at})
    return rows


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def report(rows: list[dict]) -> None:
    print(f"{'noise':>8} {'class':>8} {'n':>4} {'correct':>8} {'unknown':>8} {'wrong':>6} "
          f"{'p50 s':>6} {'p95 s':>6} {'max s':>6}")
    for snr in (None, 20.0, 10.0):
        for cls in ("human", "machine"):
            sel = [r for r in rows if r["snr_db"] == snr and r["expected"] == cls]
            ok = [r for r in sel if r["result"] == cls]
            unknown = [r for r in sel if r["result"] == "unknown"]
            times = [r["at"] for r in ok]
            noise = "clean" if snr is None else f"{snr:.0f} dB"
            print(f"{noise:>8} {cls:>8} {len(sel):>4} {100 * len(ok) / len(sel):>7.1f}% "
                  f"{100 * len(unknown) / len(sel):>7.1f}% {len(sel) - len(ok) - len(unknown):>6} "
                  f"{pct(times, 50):>6.2f} {pct(times, 95):>6.2f} {max(times, default=float('nan')):>6.2f}")
    wrong = [r for r in rows if r["result"] not in (r["expected"], "unknown")]
    for r in wrong[:12]:
        noise = "clean" if r["snr_db"] is None else f"{r['snr_db']:.0f} dB"
        print(f"  wrong: {r['label']} ({noise}) -> {r['result']}: {r['reason']} at {r['at']} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print every case as a JSON line")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        print("bench_amd: espeak-ng is missing (apt-get install espeak-ng)", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        cases = build(rng, Path(tmp))
    rows = run(cases, rng)
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
