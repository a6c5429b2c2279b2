"""InboundProcessor (framing, DTMF before VAD, tone masking, frame tap) and DigitMerger."""

from __future__ import annotations

import numpy as np
import pytest
from test_audio_support import SENTENCES, speech, speech_bounds

from ivr.audio.dtmf import DtmfDetector, generate_dtmf
from ivr.audio.frames import array_to_pcm
from ivr.audio.pipeline import DigitDetected, DigitMerger, InboundProcessor
from ivr.audio.vad import SpeechEnded, SpeechStarted, VoiceActivityDetector


def feed_random_chunks(proc: InboundProcessor, pcm: bytes, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    events, i = [], 0
    while i < len(pcm):
        n = int(rng.integers(1, 2000))  # odd sizes split samples across chunks
        events += proc.process(pcm[i:i + n])
        i += n
    return events + proc.close()


def test_digits_do_not_trigger_speech_but_speech_does():
    tones = generate_dtmf("4711#", 120, 150, amplitude=0.3)
    talk = speech(SENTENCES[2])
    a, b = speech_bounds(talk)
    x = np.concatenate([np.zeros(4000, dtype=np.int16), tones, np.zeros(8000, dtype=np.int16), talk,
                        np.zeros(8000, dtype=np.int16)])
    events = feed_random_chunks(InboundProcessor(), array_to_pcm(x))
    digits = [e for e in events if isinstance(e, DigitDetected)]
    assert "".join(d.digit for d in digits) == "4711#"
    assert abs(digits[0].t - 0.5) <= 0.02
    started = [e for e in events if isinstance(e, SpeechStarted)]
    ended = [e for e in events if isinstance(e, SpeechEnded)]
    talk_start = (4000 + tones.size + 8000 + a) / 8000
    assert len(started) == 1 and abs(started[0].t - talk_start) <= 0.1
    assert len(ended) == 1 and abs(ended[0].t - (4000 + tones.size + 8000 + b) / 8000) <= 0.1


def test_without_masking_webrtcvad_calls_tones_speech():
    # Why the pipeline masks: the same tones through the VAD alone start "speech".
    tones = generate_dtmf("4711#", 120, 150, amplitude=0.3)
    vad = VoiceActivityDetector()
    events = [e for i in range(0, tones.size - 159, 160) for e in vad.feed(tones[i:i + 160])]
    assert any(isinstance(e, SpeechStarted) for e in events)


def test_chunking_does_not_change_events_and_tap_sees_every_frame():
    x = np.concatenate([generate_dtmf("123", 60, 60), speech(SENTENCES[1]), np.zeros(8000, dtype=np.int16)])
    pcm = array_to_pcm(x)

    def summary(events):
        return [(type(e).__name__, getattr(e, "digit", None), round(e.t, 3)) for e in events]

    ref = summary(feed_random_chunks(InboundProcessor(), pcm, seed=1))
    tapped: list[tuple[np.ndarray, float]] = []
    proc = InboundProcessor(on_frame=lambda f, t: tapped.append((f.copy(), t)))
    assert summary(feed_random_chunks(proc, pcm, seed=2)) == ref
    assert [t for _, t in tapped] == pytest.approx([k * 0.02 for k in range(len(tapped))])
    assert np.array_equal(np.concatenate([f for f, _ in tapped])[: x.size], x)


def test_dtmf_or_vad_can_be_turned_off():
    x = array_to_pcm(np.concatenate([generate_dtmf("9", 100, 100), speech(SENTENCES[1])]))
    only_vad = InboundProcessor(dtmf=False).process(x)
    assert not any(isinstance(e, DigitDetected) for e in only_vad)
    only_dtmf = InboundProcessor(vad=None)
    assert [e.digit for e in only_dtmf.process(x) + only_dtmf.close()] == ["9"]


def test_merger_counts_each_press_once():
    m = DigitMerger(window=0.15)
    assert m.add("5", "inband", 10.00) == "5"
    assert m.add("5", "pbx", 10.10) is None  # the same press reported by the PBX
    assert m.add("5", "inband", 10.40) == "5"  # a second press
    assert m.add("5", "pbx", 10.45) is None
    assert m.add("6", "pbx", 11.00) == "6"  # PBX first, in-band second
    assert m.add("6", "inband", 11.12) is None
    assert m.add("7", "pbx", 12.00) == "7"
    assert m.add("7", "inband", 12.20) == "7"  # outside the window: counts
    assert m.add("8", "inband", 13.00) == "8"
    assert m.add("8", "inband", 13.05) == "8"  # same source repeats always count
    assert m.add("8", "pbx", 13.06) is None
    assert m.add("8", "pbx", 13.07) is None  # matches the second in-band report
    assert m.add("8", "pbx", 13.08) == "8"  # nothing left to match
    with pytest.raises(ValueError, match="window"):
        DigitMerger(window=-1)


def test_blocks_of_frames_give_exactly_the_frame_by_frame_events():
    # Keys over silence, over speech (masking mid-utterance) and back to back: block processing
    # (one numpy pass per block) must keep every event, time, order and the utterance audio.
    talk = speech(SENTENCES[0])
    over = talk.astype(np.int32)
    over[4000:4000 + 2560] += generate_dtmf("12", 80, 80)
    x = np.concatenate([np.zeros(3000, dtype=np.int16), generate_dtmf("4711#", 60, 50, amplitude=0.3),
                        np.clip(over, -32768, 32767).astype(np.int16), generate_dtmf("9", 60, 0),
                        speech(SENTENCES[1]), np.zeros(8000, dtype=np.int16)])
    pcm = array_to_pcm(x)

    def run(frames_per_chunk: int) -> list:
        proc = InboundProcessor()
        step = 320 * frames_per_chunk
        events = [e for i in range(0, len(pcm), step) for e in proc.process(pcm[i:i + step])] + proc.close()
        return [(type(e).__name__, getattr(e, "digit", None), round(e.t, 6), round(getattr(e, "start", 0.0), 6),
                 getattr(e, "audio", np.zeros(0, dtype=np.int16)).tobytes()) for e in events]

    ref = run(1)
    assert "".join(e[1] for e in ref if e[1]) == "4711#129"
    assert "SpeechEnded" in [e[0] for e in ref]
    for n in (2, 3, 7):
        assert run(n) == ref, n


def dtmf_frame_by_frame(x: np.ndarray) -> tuple[list, list]:
    """The reference: keys as (digit, onset, frame index) and tone_active after each 20 ms
    frame, from the plain detector fed one frame at a time."""
    ref = DtmfDetector()
    keys, tone = [], []
    for k in range(x.size // 160):
        keys += [(d, t, k) for d, t in ref.feed_timed(x[k * 160:(k + 1) * 160])]
        tone.append(ref.tone_active)
    return keys, tone


def test_dtmf_feed_frames_reports_frame_and_tone_state_of_each_frame():
    x = np.concatenate([np.zeros(480, dtype=np.int16), generate_dtmf("58", 50, 50)])
    x = x[: x.size // 160 * 160]
    keys, tone = dtmf_frame_by_frame(x)
    det = DtmfDetector()
    got_keys, got_tone = [], []
    for b in range(0, x.size // 160, 3):
        block = x[b * 160:(b + 3) * 160]
        ks, tn = det.feed_frames(block, 160)
        got_keys += [(d, t, b + j) for d, t, j in ks]
        got_tone += list(tn) if tn is not None else [False] * (block.size // 160)
    assert [k[0] for k in keys] == ["5", "8"]
    assert got_keys == keys and got_tone == tone
    assert DtmfDetector().feed_frames(np.zeros(480, dtype=np.int16), 160) == ([], None)  # silence: nothing built
    with pytest.raises(ValueError, match="whole frames"):
        det.feed_frames(np.zeros(100, dtype=np.int16), 160)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_quiet_blocks_skipped_by_frame_energies_give_exactly_the_windowed_result(seed):
    # stage_frames with frame energies skips quiet blocks without cutting windows; the keys,
    # their onsets and the tone state per frame must equal the plain detector fed frame by
    # frame: tones right after silence, faint tones near the level limit, line noise, and
    # blocks of 1-4 frames (a 1-frame block's tail reaches back into the previous buffer).
    rng = np.random.default_rng(seed)
    parts = []
    for digit in "159#*0":
        parts.append(np.zeros(int(rng.integers(1, 6)) * 160 + int(rng.integers(0, 160)), dtype=np.int16))
        parts.append((rng.standard_normal(int(rng.integers(200, 900))) * 3).astype(np.int16))  # line noise
        amp = float(rng.choice([0.3, 0.02, 0.012, 0.009]))  # -40 dBFS tones are about 0.007
        parts.append(generate_dtmf(digit, int(rng.integers(40, 90)), int(rng.integers(40, 90)), amplitude=amp))
    x = np.concatenate(parts)
    x = x[: x.size // 160 * 160]
    keys, tone = dtmf_frame_by_frame(x)
    det = DtmfDetector()
    got_keys, got_tone, skipped = [], [], 0
    b = 0
    while b < x.size // 160:
        n = int(rng.integers(1, 5))
        block = x[b * 160:(b + n) * 160]
        n = block.size // 160
        frames = block.reshape(n, 160).astype(np.float64)
        staged = det.stage_frames(block, 160, (frames * frames).mean(axis=1).tolist())
        skipped += staged.frames is None and staged.n_windows > 0
        ks, tn = det.finish_frames(staged, det.classify_staged(staged))
        got_keys += [(d, t, b + j) for d, t, j in ks]
        got_tone += list(tn) if tn is not None else [False] * n
        b += n
    assert len(keys) >= 3 and skipped >= 10  # keys were heard and the quiet path was taken
    assert got_keys == keys and got_tone == tone


def test_many_streams_analysed_together_get_exactly_their_own_events():
    # process_many stacks every stream's DTMF windows into one matrix product: each stream
    # must still get the events it gets alone (keys over silence and over speech, speech only,
    # silence only, streams joining late and blocks of different sizes).
    talk = speech(SENTENCES[0])
    over = talk.astype(np.int32)
    over[4000:4000 + 2560] += generate_dtmf("12", 80, 80)
    signals = [
        np.concatenate([np.zeros(3000, dtype=np.int16), generate_dtmf("4711#", 60, 50, amplitude=0.3),
                        np.clip(over, -32768, 32767).astype(np.int16), np.zeros(8000, dtype=np.int16)]),
        np.concatenate([speech(SENTENCES[1]), np.zeros(8000, dtype=np.int16)]),
        np.zeros(40000, dtype=np.int16),
        np.concatenate([np.zeros(9000, dtype=np.int16), generate_dtmf("*0#", 70, 60, amplitude=0.2),
                        np.zeros(6000, dtype=np.int16)]),
    ]
    pcms = [array_to_pcm(x) for x in signals]

    def summary(events: list) -> list:
        return [(type(e).__name__, getattr(e, "digit", None), round(e.t, 6),
                 getattr(e, "audio", np.zeros(0, dtype=np.int16)).tobytes()) for e in events]

    alone = []
    for pcm in pcms:
        proc = InboundProcessor()
        alone.append(summary([e for i in range(0, len(pcm), 640) for e in proc.process(pcm[i:i + 640])]))
    assert "".join(e[1] for e in alone[0] if e[1]) == "4711#12"
    assert "".join(e[1] for e in alone[3] if e[1]) == "*0#"

    procs = [InboundProcessor() for _ in pcms]
    together: list[list] = [[] for _ in pcms]
    offsets = [0] * len(pcms)
    sizes = [640, 640, 960, 320]  # blocks of 40, 40, 60 and 20 ms
    turn = 0
    while any(off < len(pcm) for off, pcm in zip(offsets, pcms)):
        items, who = [], []
        for k, pcm in enumerate(pcms):
            if (k == 3 and turn < 5) or offsets[k] >= len(pcm):
                continue  # stream 3 joins late; finished streams drop out
            items.append((procs[k], pcm[offsets[k]:offsets[k] + sizes[k]]))
            offsets[k] += sizes[k]
            who.append(k)
        for k, events in zip(who, InboundProcessor.process_many(items)):
            together[k] += events
        turn += 1
    for k in range(len(pcms)):
        assert summary(together[k]) == alone[k], k


def test_frames_kept_by_one_stream_do_not_hold_the_other_streams_audio():
    # The VAD keeps an utterance's frames until it ends (up to 30 s): analysed together, they
    # must still be views of the stream's own audio, never of the block joined for all streams.
    talk = array_to_pcm(speech(SENTENCES[0]))
    speaking, quiet = InboundProcessor(), [InboundProcessor() for _ in range(9)]
    silence = bytes(640)
    for i in range(0, len(talk) // 2, 640):
        InboundProcessor.process_many([(speaking, talk[i:i + 640])] + [(q, silence) for q in quiet])
        if speaking.vad.in_speech:
            break
    assert speaking.vad.in_speech
    for frame in speaking.vad.utterance_frames():
        owner = frame
        while isinstance(owner, np.ndarray) and owner.base is not None:
            owner = owner.base
        assert len(memoryview(owner).cast("B")) == 640  # its own 40 ms block, not ten calls'
