"""The offline engines for real: hibari TTS -> 8 kHz -> pocketsphinx grammar STT, espeak, cache."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from ivr.speech import AdapterFailed, AdapterUnavailable, synthesize_all, transcribe

pytestmark = pytest.mark.speech

needs_hibari = pytest.mark.skipif(importlib.util.find_spec("hibari") is None,
                                  reason="hibari-tts not installed (pip install hibari-tts)")
needs_sphinx = pytest.mark.skipif(importlib.util.find_spec("pocketsphinx") is None,
                                  reason="pocketsphinx not installed (pip install pocketsphinx)")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng binary missing (apt-get install espeak-ng)")

PHRASES = ["Sales", "Support", "Operator", "Billing"]


@pytest.fixture(scope="session")
def hibari():
    from ivr.speech.tts_hibari import HibariTTS

    return HibariTTS()


@pytest.fixture(scope="session")
def sphinx():
    from ivr.speech.stt_pocketsphinx import PocketSphinxSTT

    return PocketSphinxSTT()


@pytest.fixture(scope="session")
def utterances(hibari):
    """8 kHz caller audio for each phrase, three voices' worth of noise seeds, 200 ms silence around."""
    from ivr.speech.tts_hibari import HibariTTS

    out = {}
    for seed in (0, 1, 2):
        tts = hibari if seed == 0 else HibariTTS(seed=seed)
        if seed:
            tts._engines = hibari._engines  # same loaded model, different noise seed
        for p in PHRASES:
            pcm = asyncio.run(synthesize_all(tts, p.lower()))
            out[(p, seed)] = np.concatenate([np.zeros(1600, np.int16), pcm, np.zeros(1600, np.int16)])
    return out


async def recognise_in_frames(stt, pcm, **kw):
    stream = stt.start(**kw)
    try:
        for i in range(0, len(pcm), 160):
            await stream.feed(pcm[i:i + 160])
        t0 = time.perf_counter()
        result = await stream.finish()
        return result, time.perf_counter() - t0
    finally:
        await stream.close()


@needs_hibari
async def test_hibari_is_8k_int16_deterministic_and_streams_by_sentence(hibari):
    text = "Welcome to Acme. Press one for sales. Press two for support."
    chunks = [c async for c in hibari.synthesize(text)]
    assert len(chunks) == 3 and all(c.dtype == np.int16 and c.ndim == 1 for c in chunks)
    again = await synthesize_all(hibari, text)
    assert np.array_equal(np.concatenate(chunks), again)  # fixed seed: bit-identical
    secs = len(again) / 8000
    assert 2.5 < secs < 8 and np.abs(again).max() > 3000
    # speech energy is below 4 kHz (resampled, not aliased): nothing odd at the band edge
    spec = np.abs(np.fft.rfft(again.astype(float)))
    assert spec[: len(spec) * 3 // 4].sum() > 50 * spec[len(spec) * 15 // 16:].sum()
    fast = await synthesize_all(hibari, text, rate=1.5)
    assert len(fast) < 0.8 * len(again)
    with pytest.raises(ValueError, match=r"rate must be between 0.5 and 2.0"):
        hibari.synthesize(text, rate=5)
    with pytest.raises(AdapterFailed, match=r"hibari: unknown voice 'nobody'; known: .*heart"):
        await synthesize_all(hibari, "Hi.", voice="nobody")


@needs_hibari
@needs_sphinx
async def test_grammar_recognition_of_tts_phrases(sphinx, utterances):
    right, finish_ms, report = 0, [], []
    for (phrase, seed), pcm in utterances.items():
        result, dt = await recognise_in_frames(sphinx, pcm, phrases=PHRASES)
        finish_ms.append(dt * 1e3)
        assert result.is_final and 0 <= result.confidence <= 1
        right += result.text == phrase  # mapped back to the phrase exactly as given
        report.append(f"{phrase}/{seed}->{result.text or '-'}({result.confidence:.2f})")
    print(f"\ngrammar accuracy {right}/{len(utterances)}; finish ms max {max(finish_ms):.1f}; " + " ".join(report))
    assert right >= 11, report  # measured 12/12 (deterministic: same audio, same result)
    assert max(finish_ms) < 100  # result promptly after end of speech (measured ~1 ms)


@needs_hibari
@needs_sphinx
async def test_confidence_and_no_match(sphinx, hibari, utterances):
    good, _ = await recognise_in_frames(sphinx, utterances[("Billing", 0)], phrases=PHRASES)
    assert good.text == "Billing" and good.confidence > 0.8
    # out-of-grammar speech: either no match or a lower confidence than a clean hit
    other = await synthesize_all(hibari, "what is the weather like today")
    r, _ = await recognise_in_frames(sphinx, np.concatenate([np.zeros(1600, np.int16), other]), phrases=PHRASES)
    assert r.text == "" or r.confidence < good.confidence
    silence, _ = await recognise_in_frames(sphinx, np.zeros(8000, np.int16), phrases=PHRASES)
    assert silence.text == "" and silence.confidence == 0


@needs_sphinx
async def test_phrase_normalising_unknown_words_and_errors(sphinx, caplog, utterances):
    with caplog.at_level(logging.WARNING):
        r, _ = await recognise_in_frames(sphinx, utterances[("Operator", 0)],
                                         phrases=["Operator!", "Sales zzyzxq"])
    assert (r.text, r.raw) == ("Operator!", "operator")  # mapped back to the phrase as written
    assert "['zzyzxq'] are not in the dictionary" in caplog.text
    with pytest.raises(AdapterFailed, match="none of the phrases"):
        await transcribe(sphinx, np.zeros(1600, np.int16), phrases=["qqxzv"])
    with pytest.raises(ValueError, match="phrases is empty"):
        sphinx.start(phrases=[" "])
    with pytest.raises(AdapterUnavailable, match="only the bundled en-US model"):
        sphinx.start(language="de-DE")
    with pytest.raises(TypeError, match=r"pocketsphinx.feed: expected a 1-D int16"):
        await sphinx.start(phrases=PHRASES).feed(np.zeros(160, np.float32))


@needs_hibari
@needs_sphinx
async def test_custom_jsgf_grammar(sphinx, utterances):
    jsgf = "#JSGF V1.0;\ngrammar menu;\npublic <menu> = customer support | support | operator;\n"
    r, _ = await recognise_in_frames(sphinx, utterances[("Support", 1)], grammar=jsgf)
    assert r.text == "support" and r.raw == "support"  # user grammars are returned unmapped
    with pytest.raises(AdapterFailed, match="bad JSGF grammar"):
        await transcribe(sphinx, np.zeros(800, np.int16), grammar="public <x> = ;")


@needs_sphinx
async def test_cancel_mid_feed_returns_decoder_to_pool(sphinx):
    from ivr.speech.stt_pocketsphinx import PocketSphinxSTT

    stt = PocketSphinxSTT(pool_size=1)
    stream = stt.start(phrases=PHRASES)
    noise = (np.random.default_rng(0).standard_normal(80000) * 300).astype(np.int16)
    task = asyncio.create_task(stream.feed(noise))  # 10 s of audio in one go: a long thread job
    await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await stream.close()  # waits for the thread before pooling the decoder
    assert len(stt._idle) == 1
    r = await transcribe(stt, np.zeros(4000, np.int16), phrases=PHRASES)  # the pooled decoder still works
    assert r.text == "" and len(stt._idle) == 1


@needs_espeak
async def test_espeak_produces_8k_speech():
    from ivr.speech.tts_espeak import EspeakTTS

    tts = EspeakTTS()
    chunks = [c async for c in tts.synthesize("Hello. -rf is not an option here.")]
    assert len(chunks) == 2 and all(c.dtype == np.int16 for c in chunks)
    assert 0.4 < len(chunks[0]) / 8000 < 2 and np.abs(chunks[0]).max() > 3000
    slow = await synthesize_all(tts, "Hello there, caller.", rate=0.6)
    quick = await synthesize_all(tts, "Hello there, caller.", rate=1.5)
    assert len(slow) > 1.5 * len(quick)
    # an engine that exits with an error (here /bin/false) is a typed failure
    with pytest.raises(AdapterFailed, match="espeak: espeak-ng exited with 1: no output"):
        await synthesize_all(EspeakTTS(binary="false"), "Hi.")


@needs_espeak
async def test_espeak_without_asyncio_subprocesses_runs_it_in_a_thread(monkeypatch):
    # Windows' selector event loop (which the CLI selects there for the audio sockets) has no
    # subprocess support: the adapter then runs espeak-ng from a thread, with the same results.
    from ivr.speech.tts_espeak import EspeakTTS

    async def unsupported(*args, **kwargs):
        raise NotImplementedError

    monkeypatch.setattr(asyncio, "create_subprocess_exec", unsupported)
    pcm = await synthesize_all(EspeakTTS(), "Hello there, caller.")
    assert pcm.dtype == np.int16 and 0.5 < len(pcm) / 8000 < 3 and np.abs(pcm).max() > 3000
    with pytest.raises(AdapterFailed, match="espeak: espeak-ng exited with 1: no output"):
        await synthesize_all(EspeakTTS(binary="false"), "Hi.")


async def test_espeak_missing_binary_says_what_to_install():
    from ivr.speech.tts_espeak import EspeakTTS

    with pytest.raises(AdapterUnavailable, match="not found: apt-get install espeak-ng"):
        await synthesize_all(EspeakTTS(binary="espeak-ng-not-here"), "Hi.")


class CountingTTS:
    """Wraps a real TTS and counts syntheses (to prove cache hits do not synthesize)."""

    def __init__(self, inner):
        self.inner, self.name, self.count = inner, inner.name, 0

    async def synthesize(self, text, *, voice=None, rate=None):
        self.count += 1
        async for c in self.inner.synthesize(text, voice=voice, rate=rate):
            await asyncio.sleep(0.01)  # keep the synthesis open so concurrent requests overlap
            yield c


@needs_hibari
async def test_cache_synthesizes_once_even_concurrently(hibari, tmp_path, monkeypatch):
    from ivr.speech.tts_cache import CachedTTS, default_cache_dir

    monkeypatch.setenv("IVR_TTS_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    counting = CountingTTS(hibari)
    cache = CachedTTS(counting, tmp_path / "c")
    text = "Thank you for calling. Please hold."
    first, second, third = await asyncio.gather(*(synthesize_all(cache, text) for _ in range(3)))
    assert counting.count == 1 and cache.misses == 1
    assert np.array_equal(first, second) and np.array_equal(first, third)
    assert len(list((tmp_path / "c").rglob("*.wav"))) == 1
    again = await synthesize_all(cache, text)
    assert counting.count == 1 and cache.hits == 1 and np.array_equal(again, first)
    # a new cache object on the same directory (a restarted worker) hits the file too
    fresh = CachedTTS(counting, tmp_path / "c")
    assert np.array_equal(await synthesize_all(fresh, text), first) and counting.count == 1
    # voice / rate / text are part of the key
    await synthesize_all(cache, text, rate=1.2)
    assert counting.count == 2
    # a consumer that stops after the first chunk still leaves a complete prompt in the cache
    agen = cache.synthesize("One. Two. Three.")
    await anext(agen)
    await agen.aclose()
    for _ in range(200):  # the synthesis task finishes on its own
        if not cache._inflight:
            break
        await asyncio.sleep(0.01)
    assert np.array_equal(await synthesize_all(cache, "One. Two. Three."),
                          await synthesize_all(hibari, "One. Two. Three.")) and counting.count == 3


async def test_cache_does_not_store_failures(tmp_path):
    from ivr.speech.tts_cache import CachedTTS

    class Failing:
        name = "failing"

        async def synthesize(self, text, *, voice=None, rate=None):
            yield np.zeros(10, np.int16)
            raise AdapterFailed("engine crashed", adapter="failing")

    cache = CachedTTS(Failing(), tmp_path)
    with pytest.raises(AdapterFailed, match="engine crashed"):
        await synthesize_all(cache, "x")
    assert list(tmp_path.rglob("*.wav")) == []


@pytest.mark.parametrize("threaded", [False, True])
async def test_espeak_that_hangs_times_out_saying_what(tmp_path, monkeypatch, threaded):
    # Either way of running it (asyncio subprocess, or a thread where asyncio has none), a
    # synthesizer that never answers ends in AdapterTimeout naming it, and is not left running.
    from ivr.speech import AdapterTimeout
    from ivr.speech.tts_espeak import EspeakTTS

    hang = tmp_path / "espeak-hangs"
    hang.write_text("#!/bin/sh\nexec sleep 30\n")
    hang.chmod(0o755)
    if threaded:
        async def unsupported(*args, **kwargs):
            raise NotImplementedError

        monkeypatch.setattr(asyncio, "create_subprocess_exec", unsupported)
    started = time.monotonic()
    with pytest.raises(AdapterTimeout, match=r"espeak: espeak-ng took longer than 0.2 s"):
        await synthesize_all(EspeakTTS(binary=str(hang), timeout=0.2), "Hi.")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("threaded", [False, True])
async def test_espeak_cancelled_mid_sentence_leaves_no_child_running(tmp_path, monkeypatch, threaded):
    # A barge-in or a hang-up cancels the synthesis: espeak-ng must not go on for its timeout,
    # holding a thread of the shared pool in the threaded case.
    from ivr.speech.tts_espeak import EspeakTTS

    pidfile = tmp_path / "pid"
    hang = tmp_path / "espeak-hangs"
    hang.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 30\n")
    hang.chmod(0o755)
    if threaded:
        async def unsupported(*args, **kwargs):
            raise NotImplementedError

        monkeypatch.setattr(asyncio, "create_subprocess_exec", unsupported)
    task = asyncio.create_task(synthesize_all(EspeakTTS(binary=str(hang), timeout=20), "Hi."))
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.01)
    pid = int(pidfile.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    def running() -> bool:
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False
        return "\nState:\tZ" not in state  # a zombie is dead, only not yet reaped

    for _ in range(100):
        if not running():
            break
        await asyncio.sleep(0.01)
    assert not running()
