"""``pocketsphinx`` STT: offline CMU PocketSphinx 5 with its bundled en-US model.

With ``phrases`` it builds a JSGF grammar (``public <choice> = phrase1 | phrase2 ...``), which
is accurate on 8 kHz telephony audio; the result's ``text`` is the phrase exactly as given.
Without phrases (and without ``grammar``) it uses the full en-US language model, which is
poor on 8 kHz audio (word error rate 0.6+): use it only for rough open answers.

Grammar search often picks some phrase even for speech that is none of them (it does
return "" when the search reaches no final state, e.g. "pizza" against sales/support/operator).
``phone_loop=True`` (experimental, off by default) also decodes the same audio with a free
phone loop (``allphone``, ~15 ms more) and multiplies the confidence by a logistic of the
per-frame score ratio grammar/phone-loop (centre ``phone_loop_center``). On whole TTS clips it
separated phrases from other speech well, but on VAD segments through the emulator it
rejected "support" 6 times out of 6 and accepted "good morning" as support: not reliable yet.

Decoders take ~0.1 s to create and the full LM much longer, so idle decoders are kept in a
pool and each keeps the grammars it has compiled. Audio is upsampled 8 -> 16 kHz in a
streaming way (the acoustic front end needs 16 kHz) and decoded in a worker thread in
batches of ``batch_ms`` so the event loop never runs the decoder.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import logging
import math
import os
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .base import (
    AdapterFailed,
    AdapterUnavailable,
    Alternative,
    BaseRecognitionStream,
    Transcript,
    check_pcm,
)
from .text import normalize_phrase

log = logging.getLogger(__name__)

NAME = "pocketsphinx"
_FILLERS = {"<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]", "[BREATH]", "[COUGH]", "[UM]", "[UH]", "[SMACK]"}


def _import_pocketsphinx():
    try:
        import pocketsphinx
    except ImportError:
        raise AdapterUnavailable("the pocketsphinx package is missing: pip install 'pocketsphinx>=5'", adapter=NAME) from None
    return pocketsphinx


@dataclass
class Grammar:
    """A compiled phrase list: the JSGF text and the map from decoded words back to phrases."""

    jsgf: str
    search: str
    to_phrase: dict[str, str] = field(default_factory=dict)


@dataclass
class _Decoder:
    """A pocketsphinx Decoder plus the searches (grammars / LM) already added to it."""

    decoder: Any  # pocketsphinx.Decoder: the library ships no types
    searches: set[str] = field(default_factory=set)


class PocketSphinxSTT:
    """Offline speech recogniser (registry name ``pocketsphinx``).

    Options: ``hmm``/``dict`` paths to another model, ``batch_ms`` (audio decoded per worker
    thread hop, default 100), ``pool_size`` (idle decoders kept, default 4), ``partials``
    (compute partial hypotheses, default False: costs a backtrace per batch), ``phone_loop``
    (scale the confidence of grammar results by a phone-loop score ratio; experimental,
    default False, see the module docstring) and ``phone_loop_center``
    (per-frame log-ratio at which that factor is 0.5; default -1.25, measured on hibari
    speech: phrases scored -0.9..+12, other speech -7.6..-1.0 with a few short words above),
    ``fwdflat`` (open dictation only: pocketsphinx's second "flat" pass over the whole
    utterance at ``end_utt``; default False: it made the final result take 50-230 ms instead
    of 3-20 ms after the last audio, at the same word error rate on hibari speech, 0.52 vs 0.48
    on 8 sentences, which spoils streaming recognition).
    """

    name = NAME

    def __init__(self, *, hmm: str | None = None, dict: str | None = None, batch_ms: int = 100,
                 pool_size: int = 4, partials: bool = False, phone_loop: bool = False,
                 phone_loop_center: float = -1.25, fwdflat: bool = False) -> None:
        if batch_ms < 10:
            raise ValueError(f"pocketsphinx: batch_ms must be >= 10, got {batch_ms}")
        self._hmm, self._dict = hmm, dict
        self.batch_samples = batch_ms * 8
        self.pool_size = pool_size
        self.want_partials = partials
        self.phone_loop = phone_loop
        self.phone_loop_center = float(phone_loop_center)
        self.fwdflat = bool(fwdflat)
        self._idle: list[_Decoder] = []
        self._lock = threading.Lock()  # guards _idle and _grammars (used from worker threads)
        self._grammars: builtins.dict[tuple[str, tuple[str, ...] | str], Grammar] = {}  # `dict` is a parameter here
        self._lm_path: str | None = None

    # -- decoders --------------------------------------------------------------------------

    def _new_decoder(self) -> _Decoder:
        ps = _import_pocketsphinx()
        kwargs = {"samprate": 16000, "lm": None, "loglevel": "FATAL", "fwdflat": self.fwdflat}
        if self._hmm:
            kwargs["hmm"] = self._hmm
        if self._dict:
            kwargs["dict"] = self._dict
        try:
            d = ps.Decoder(**kwargs)
        except Exception as e:
            raise AdapterFailed(f"cannot create decoder: {e}", adapter=NAME) from e
        self._lm_path = os.path.join(ps.get_model_path(), "en-us", "en-us.lm.bin")
        self._phone_lm_path = os.path.join(ps.get_model_path(), "en-us", "en-us-phone.lm.bin")
        return _Decoder(d)

    def acquire(self) -> _Decoder:
        """An idle decoder from the pool, or a new one (blocking: call from a thread)."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._new_decoder()

    def release(self, dec: _Decoder) -> None:
        """Give a decoder back (dropped if the pool is full)."""
        with self._lock:
            if len(self._idle) < self.pool_size:
                self._idle.append(dec)

    async def warm_up(self, phrases: Sequence[str] | None = None) -> None:
        """Create one decoder (and compile ``phrases``) ahead of the first call."""
        def work() -> None:
            dec = self.acquire()
            try:
                if phrases:
                    self._activate(dec, self.grammar_for(phrases, dec))
            finally:
                self.release(dec)
        await asyncio.to_thread(work)

    # -- grammars --------------------------------------------------------------------------

    def grammar_for(self, phrases: Sequence[str], dec: _Decoder) -> Grammar:
        """Compile (once per phrase list) a JSGF grammar, dropping words not in the dictionary."""
        key = ("phrases", tuple(phrases))
        with self._lock:
            g = self._grammars.get(key)
        if g is not None:
            return g
        to_phrase: dict[str, str] = {}
        for phrase in phrases:
            words = normalize_phrase(phrase).split()
            known = [w for w in words if dec.decoder.lookup_word(w) is not None]
            if len(known) < len(words):
                log.warning("pocketsphinx: phrase %r: words %s are not in the dictionary and are ignored",
                            phrase, [w for w in words if w not in known])
            if known:
                to_phrase.setdefault(" ".join(known), phrase)
        if not to_phrase:
            raise AdapterFailed(f"none of the phrases {list(phrases)!r} has a word in the dictionary", adapter=NAME)
        alts = " | ".join(sorted(to_phrase, key=len, reverse=True))
        jsgf = f"#JSGF V1.0;\ngrammar choice;\npublic <choice> = {alts};\n"
        g = Grammar(jsgf, "g" + hashlib.sha256(jsgf.encode()).hexdigest()[:16], to_phrase)
        with self._lock:
            self._grammars[key] = g
        return g

    def grammar_from_jsgf(self, jsgf: str) -> Grammar:
        """Wrap a user-written JSGF grammar (results are returned as decoded, unmapped)."""
        return Grammar(jsgf, "j" + hashlib.sha256(jsgf.encode()).hexdigest()[:16])

    def _activate(self, dec: _Decoder, g: Grammar | None) -> None:
        d = dec.decoder
        if g is None:  # open vocabulary: the full LM, loaded once per decoder
            if "lm" not in dec.searches:
                d.add_lm_file("lm", self._lm_path)
                dec.searches.add("lm")
            d.activate_search("lm")
            return
        if g.search not in dec.searches:
            try:
                d.add_jsgf_string(g.search, g.jsgf)
            except Exception as e:
                raise AdapterFailed(f"bad JSGF grammar: {e}", adapter=NAME) from e
            dec.searches.add(g.search)
        d.activate_search(g.search)

    def phone_loop_ratio(self, dec: _Decoder, chunks: Sequence[np.ndarray], grammar_score: float) -> float | None:
        """Per-frame log-likelihood ratio of the grammar's best path against a free phone loop
        on the same 16 kHz audio (0: as good as any phone sequence; negative: worse).

        ``chunks`` are fed exactly as the grammar pass got them: live cepstral mean
        normalisation depends on the chunking, and both scores must see the same features."""
        d = dec.decoder
        if "_phone" not in dec.searches:
            d.add_allphone_file("_phone", self._phone_lm_path)
            dec.searches.add("_phone")
        d.activate_search("_phone")
        d.reinit_feat()
        d.start_utt()
        for chunk in chunks:
            d.process_raw(chunk.tobytes(), False, False)
        d.end_utt()
        hyp, frames = d.hyp(), d.n_frames()
        if hyp is None or hyp.score <= 0 or grammar_score <= 0 or frames <= 0:
            return None
        logmath = d.get_logmath()  # scores come back as logmath.exp(log score)
        return (logmath.log(grammar_score) - logmath.log(hyp.score)) / frames

    # -- protocol --------------------------------------------------------------------------

    def start(self, *, phrases: Sequence[str] | None = None, grammar: str | None = None,
              language: str | None = None) -> PocketSphinxStream:
        """Begin an utterance; with ``phrases`` only those phrases can be recognised."""
        if language and not language.lower().replace("_", "-").startswith("en"):
            raise AdapterUnavailable(f"only the bundled en-US model is available, not {language!r}; "
                                     "use another STT adapter for that language", adapter=NAME)
        if phrases is not None and not [p for p in phrases if str(p).strip()]:
            raise ValueError("pocketsphinx.start: phrases is empty")
        return PocketSphinxStream(self, list(phrases) if phrases else None, grammar)


class PocketSphinxStream(BaseRecognitionStream):
    """One utterance on one pooled decoder. Not safe for concurrent ``feed`` calls."""

    def __init__(self, stt: PocketSphinxSTT, phrases: list[str] | None, jsgf: str | None) -> None:
        self._stt = stt
        self._phrases, self._jsgf = phrases, jsgf
        self._dec: _Decoder | None = None
        self._grammar: Grammar | None = None
        self._resampler: Any = None  # soxr.ResampleStream, made in the worker thread
        self._pending: list[np.ndarray] = []
        self._pending_n = 0
        self._job: asyncio.Future | None = None  # the worker-thread call in flight
        self._partials: asyncio.Queue[Transcript | None] = asyncio.Queue()
        self._audio16k: list[np.ndarray] = []  # kept for the phone-loop pass (grammar only)
        self._last_partial = ""
        self._done = False
        self._in_utt = False
        self.frames_fed = 0

    # Everything below named _work_* runs in a worker thread.

    def _work_begin(self) -> _Decoder:
        import soxr

        dec = self._dec = self._stt.acquire()
        if self._jsgf:
            self._grammar = self._stt.grammar_from_jsgf(self._jsgf)
        elif self._phrases:
            self._grammar = self._stt.grammar_for(self._phrases, self._dec)
        self._stt._activate(self._dec, self._grammar)
        # float32, not int16: soxr dithers int16 output with a random seed, which made
        # recognition of the same audio differ from run to run.
        self._resampler = soxr.ResampleStream(8000, 16000, 1, dtype="float32")
        # A fresh front end (cepstral mean, 0.06 ms) per utterance: a pooled decoder carries
        # nothing over from another call and the same audio always gives the same result.
        dec.decoder.reinit_feat()
        dec.decoder.start_utt()
        self._in_utt = True
        return dec

    def _work_process(self, pcm: np.ndarray, last: bool) -> str | None:
        dec = self._dec if self._dec is not None else self._work_begin()
        up = self._resampler.resample_chunk(pcm.astype(np.float32), last=last)
        up = np.clip(np.round(up), -32768, 32767).astype(np.int16)
        if len(up):
            dec.decoder.process_raw(up.tobytes(), False, False)
            if self._grammar is not None and self._stt.phone_loop:
                self._audio16k.append(up)
        if self._stt.want_partials and not last:
            hyp = dec.decoder.hyp()
            return hyp.hypstr if hyp is not None else ""
        return None

    def _work_finish(self, pcm: np.ndarray) -> Transcript:
        self._work_process(pcm, True)
        dec = self._dec if self._dec is not None else self._work_begin()  # set by _work_process
        d = dec.decoder
        d.end_utt()
        self._in_utt = False
        hyp = d.hyp()
        raw = hyp.hypstr if hyp is not None else ""
        # Confidence: the decoder's word posteriors (lattice forward-backward), averaged
        # over the real words of the best path.
        posts = [seg.prob for seg in (d.seg() or ()) if seg.word not in _FILLERS and not seg.word.startswith("<")]
        conf = float(min(1.0, max(0.0, sum(posts) / len(posts)))) if posts and raw else 0.0
        if self._grammar is not None and self._grammar.to_phrase and raw not in self._grammar.to_phrase:
            # The search ended inside a phrase (no final state reached): that is no match.
            return Transcript("", confidence=0.0, is_final=True, raw=raw)
        nbest: list[tuple[str, float]] = []
        if raw and hyp.score > 0:
            nbest = [(n.hypstr, n.score) for n, _ in zip(d.nbest() or (), range(10)) if n is not None and n.hypstr]
        if raw and self._grammar is not None and self._stt.phone_loop and self._audio16k:
            # (after nbest: the phone-loop pass replaces the decoder's search results)
            chunks, self._audio16k = self._audio16k, []
            ratio = self._stt.phone_loop_ratio(dec, chunks, hyp.score)
            if ratio is not None:
                conf *= 1.0 / (1.0 + math.exp(-2.0 * (ratio - self._stt.phone_loop_center)))
        alts: list[Alternative] = []
        seen = {self._map(raw)}
        for hypstr, score in nbest:
            text = self._map(hypstr)
            if text not in seen:
                seen.add(text)
                # relative path score against the best path, scaled by its confidence
                alts.append(Alternative(text, round(conf * min(1.0, score / hyp.score), 4)))
        return Transcript(self._map(raw), confidence=round(conf, 4), is_final=True,
                          alternatives=tuple(alts[:4]), raw=raw)

    def _map(self, raw: str) -> str:
        if self._grammar is not None and self._grammar.to_phrase:
            return self._grammar.to_phrase.get(raw, raw)
        return raw

    async def _run(self, fn, *args):
        # Keep a handle on the thread job: if our caller is cancelled the thread still runs,
        # and close() must wait for it before the decoder goes back to the pool.
        self._job = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        return await asyncio.shield(self._job)

    def _take_pending(self) -> np.ndarray:
        pcm = np.concatenate(self._pending) if self._pending else np.zeros(0, np.int16)
        self._pending, self._pending_n = [], 0
        return pcm

    async def feed(self, pcm: np.ndarray) -> None:
        """Queue 8 kHz int16 audio; decodes in a worker thread every ``batch_ms``."""
        check_pcm(pcm, "pocketsphinx.feed")
        if self._done:
            raise AdapterFailed("feed() after finish() or close()", adapter=NAME)
        self._pending.append(pcm)
        self._pending_n += len(pcm)
        self.frames_fed += 1
        if self._pending_n >= self._stt.batch_samples:
            partial = await self._run(self._work_process, self._take_pending(), False)
            if partial and partial != self._last_partial:
                self._last_partial = partial
                self._partials.put_nowait(Transcript(self._map(partial), raw=partial))

    async def finish(self) -> Transcript:
        """Decode the rest, end the utterance and return the final transcript."""
        if self._done:
            raise AdapterFailed("finish() called twice or after close()", adapter=NAME)
        self._done = True
        try:
            if self._dec is None:
                await self._run(self._work_begin)
            return await self._run(self._work_finish, self._take_pending())
        finally:
            self._partials.put_nowait(None)

    async def partials(self) -> AsyncIterator[Transcript]:
        """Partial hypotheses (only with ``partials=True`` on the adapter); ends at finish/close."""
        while True:
            item = await self._partials.get()
            if item is None:
                return
            yield item

    async def close(self) -> None:
        """Return the decoder to the pool (after any thread job in flight has finished)."""
        if self._job is not None and not self._job.done():
            try:
                await asyncio.shield(self._job)
            except Exception:  # the job's error was already reported to feed/finish
                pass
        dec, self._dec = self._dec, None
        if not self._done:
            self._done = True
            self._partials.put_nowait(None)
        if dec is not None:
            if self._in_utt:  # abandoned mid-utterance (cancelled or no finish)
                try:
                    await asyncio.to_thread(dec.decoder.end_utt)
                except Exception:  # a broken decoder is dropped, not pooled
                    return
            self._stt.release(dec)
