"""PlaybackQueue: framing, padding, events, barge-in semantics, O(1) frames."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ivr.audio.frames import pcm_to_array
from ivr.audio.playback import PlaybackCut, PlaybackFinished, PlaybackQueue


def ramp(n: int, start: int = 1) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.int16)


def test_frames_padding_and_finished_events():
    q = PlaybackQueue()
    assert q.next_frame() is None and not q.busy
    a = q.enqueue(ramp(400), tag="a")
    b = q.enqueue(ramp(160, 1000).tobytes(), tag="b")
    f1, f2, f3 = q.next_frame(), q.next_frame(), q.next_frame()
    assert np.array_equal(pcm_to_array(f1), ramp(160))
    assert np.array_equal(pcm_to_array(f2), ramp(160, 161))
    last = pcm_to_array(f3)
    assert np.array_equal(last[:80], ramp(80, 321)) and not last[80:].any()  # zero-padded
    assert q.pop_events() == [PlaybackFinished(a, "a")]
    assert np.array_equal(pcm_to_array(q.next_frame()), ramp(160, 1000))
    assert q.pop_events() == [PlaybackFinished(b, "b")] and q.pop_events() == []
    assert q.next_frame() is None and not q.busy


def test_empty_item_finishes_without_a_frame():
    q = PlaybackQueue()
    e = q.enqueue(np.zeros(0, dtype=np.int16))
    f = q.enqueue(ramp(160))
    assert q.next_frame() is not None
    assert q.pop_events() == [PlaybackFinished(e), PlaybackFinished(f)]


def test_speech_barge_in_cuts_only_items_that_allow_it():
    q = PlaybackQueue()
    p1 = q.enqueue(ramp(1600), tag="welcome")
    p2 = q.enqueue(ramp(800), barge_in_speech=False, tag="legal")
    p3 = q.enqueue(ramp(800), tag="menu")
    for _ in range(3):
        q.next_frame()
    assert q.on_speech() == [p1, p3]
    assert q.pop_events() == [PlaybackCut(p1, "welcome", "speech", 60), PlaybackCut(p3, "menu", "speech", 0)]
    assert q.current == p2
    assert q.on_speech() == []  # the legal notice plays on
    n = 0
    while q.next_frame() is not None:
        n += 1
    assert n == 5 and q.pop_events() == [PlaybackFinished(p2, "legal")]


def test_digit_barge_in_and_clear():
    q = PlaybackQueue()
    p1 = q.enqueue(ramp(800), barge_in_dtmf=False)
    p2 = q.enqueue(ramp(800), barge_in_speech=False)
    assert q.on_digit() == [p2]
    assert q.pop_events()[0].reason == "dtmf"
    q.next_frame()
    assert q.clear() == [p1]
    assert q.pop_events() == [PlaybackCut(p1, None, "clear", 20)]
    assert not q.busy and q.next_frame() is None


def test_next_frame_is_constant_time_and_does_not_copy_prompts():
    long = np.zeros(8000 * 600, dtype=np.int16)  # 10 minutes
    long.flags.writeable = False  # shared prompt-cache arrays are read-only
    short = np.zeros(1600, dtype=np.int16)

    def per_frame(pcm):
        q = PlaybackQueue()
        q.enqueue(pcm)
        t = time.perf_counter()
        for _ in range(10):
            q.next_frame()
        return (time.perf_counter() - t) / 10

    per_frame(short)
    # A 3000x longer prompt must not make frames measurably slower (generous 5x for noise).
    assert per_frame(long) < 5 * per_frame(short) + 20e-6


def test_rejects_non_int16():
    with pytest.raises(ValueError, match="int16"):
        PlaybackQueue().enqueue(np.zeros(10, dtype=np.float32))
