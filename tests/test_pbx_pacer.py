"""The outbound pacer without I/O: fed times and bytes queued, it says what to send and when
to wake. Every figure here is exact (times are compared as floats, nothing else is loose)."""

from __future__ import annotations

import math

import pytest

from ivr.pbx.pacer import BYTES_PER_SECOND, FRAME_BYTES, Pacer

BPS = BYTES_PER_SECOND
TICK = 0.005  # the shared media timer's grid


def grid(t: float) -> float:
    """The grid point a SharedTick runs a callback asked for at ``t``."""
    return math.ceil(t / TICK - 1e-9) * TICK


class Shell:
    """What OutboundAudio does around a push-mode pacer: a queue, sends, one wake-up."""

    def __init__(self, pacer: Pacer) -> None:
        self.pacer = pacer
        self.queued = 0
        self.sends: list[tuple[float, int, float]] = []  # (time, bytes, audio the PBX holds after)
        self.wake: float | None = None

    def write(self, now: float, nbytes: int) -> None:
        self.queued += nbytes
        self.pump(now)

    def pump(self, now: float, extra_s: float = 0.0) -> list[int]:
        sizes = []
        while True:
            size, wake = self.pacer.due(now, self.queued, extra_s)
            if size:
                self.queued -= size
                sizes.append(size)
                self.sends.append((now, size, self.pacer.ahead(now)))
                extra_s = 0.0
                if wake is not None and (wake <= now or not self.queued):
                    continue  # more is due at once, or the queue is out: idle
            self.wake = wake
            return sizes

    def run_until(self, end: float) -> None:
        """Wake on the grid as asked, up to ``end``."""
        while self.wake is not None and grid(self.wake) <= end + 1e-9:
            self.pump(grid(self.wake))


def test_a_prompt_is_paced_in_real_time_within_the_lead() -> None:
    pacer = Pacer(60, 2)
    shell = Shell(pacer)
    shell.write(0.0, BPS)  # 1 s
    shell.run_until(2.0)
    assert sum(size for _, size, _ in shell.sends) == BPS and shell.queued == 0
    assert shell.sends[0] == (0.0, 960, pytest.approx(0.060))  # the opening burst: a whole lead
    assert [size for _, size, _ in shell.sends[1:-1]] == [640] * 23  # then a batch of 2 frames
    assert all(ahead <= 0.060 + 1e-9 for _, _, ahead in shell.sends)  # never more than the lead
    for i, (t, _, ahead) in enumerate(shell.sends[1:-1], 1):
        assert (t, ahead) == (pytest.approx(0.04 * i), pytest.approx(0.060))  # every 40 ms, on time
    # the last frame leaves when the PBX still holds lead - 20 ms: 1 s - 60 ms
    assert shell.sends[-1][:2] == (pytest.approx(0.94), 320)
    assert pacer.next_t == pytest.approx(1.0)  # and it plays until 1 s: real time
    assert shell.wake is None  # queue empty: idle, no padding
    stats = pacer.stats
    assert (stats.bytes_sent, stats.frames_sent, stats.late_sends, stats.underruns) == (BPS, 50, 0, 0)
    assert stats.lateness_hist[0] == len(shell.sends) - 1 == sum(stats.lateness_hist)  # all on time
    assert stats.first_byte_at == 0.0


def test_a_larger_lead_runs_further_ahead() -> None:
    pacer = Pacer(200, 2)
    shell = Shell(pacer)
    shell.write(0.0, int(0.6 * BPS))
    shell.run_until(1.0)
    assert shell.sends[0][1] == 200 * BPS // 1000
    assert max(ahead for _, _, ahead in shell.sends) == pytest.approx(0.200)
    assert min(ahead for _, _, ahead in shell.sends[1:-1]) == pytest.approx(0.200)


def test_a_late_pacer_catches_up_in_one_send_within_the_lead() -> None:
    # A loop that stood still wakes every pacer late: all that is due goes in one send, not
    # batch by batch (the catch-up would cost the most CPU exactly when the process is behind).
    pacer = Pacer(200, 2)
    shell = Shell(pacer)
    shell.write(0.0, int(0.9 * BPS))
    shell.run_until(0.28)  # paced: the PBX holds 160-200 ms
    assert shell.wake == pytest.approx(0.32) and pacer.ahead(0.28) == pytest.approx(0.2)
    assert pacer.stats.late_sends == 0
    sizes = shell.pump(0.42)  # 100 ms late: the PBX played 100 ms of what it held
    assert sizes == [2240]  # 140 ms due: one send, not 3 of one batch each
    assert pacer.ahead(0.42) == pytest.approx(0.200)  # and still within the lead
    assert pacer.stats.late_sends == 1 and pacer.stats.underruns == 0  # late, not heard
    assert pacer.stats.max_lateness_ms == pytest.approx(100)
    shell.run_until(2.0)
    assert sum(size for _, size, _ in shell.sends) == int(0.9 * BPS)  # nothing lost or doubled


def test_a_stall_longer_than_the_lead_counts_an_underrun_a_shorter_one_a_late_send() -> None:
    pacer = Pacer(200, 2)
    shell = Shell(pacer)
    shell.write(0.0, BPS)
    shell.run_until(0.28)
    shell.pump(0.42)  # 100 ms late, but the PBX still held 60 ms: not heard
    assert (pacer.stats.underruns, pacer.stats.late_sends) == (0, 1)
    assert shell.wake == pytest.approx(0.46)
    shell.pump(0.46 + 0.25)  # longer than the lead: the PBX ran dry, the caller heard a gap
    assert (pacer.stats.underruns, pacer.stats.late_sends) == (1, 2)
    assert pacer.stats.max_lateness_ms == pytest.approx(250)
    assert pacer.paced_from == pytest.approx(0.71)  # the pacing clock restarted at the send
    assert pacer.ahead(0.71) == pytest.approx(0.200)  # a whole lead again


def test_no_padding_when_idle_and_the_clock_restarts_unmeasured() -> None:
    pacer = Pacer(60, 2)
    shell = Shell(pacer)
    shell.write(0.0, int(0.2 * BPS))
    shell.run_until(0.6)
    assert shell.wake is None and len(shell.sends) == 5  # idle: nothing sent after the prompt
    measured = sum(pacer.stats.lateness_hist)
    assert pacer.due(0.6, 0) == (0, None)  # asked with nothing queued: still nothing
    shell.write(0.6, int(0.2 * BPS))
    assert shell.sends[5] == (0.6, 960, pytest.approx(0.060))  # a whole lead at once, then paced
    assert sum(pacer.stats.lateness_hist) == measured  # the opening burst is not "late"
    shell.run_until(2.0)
    assert pacer.stats.late_sends == 0 and pacer.stats.underruns == 0


def test_a_top_up_sends_ahead_by_the_extra_in_one_send_and_pacing_goes_on() -> None:
    pacer = Pacer(60, 2)
    shell = Shell(pacer)
    shell.write(0.0, BPS)
    shell.run_until(0.2)
    ahead = pacer.ahead(0.21)
    assert ahead <= 0.060
    sizes = shell.pump(0.21, extra_s=0.08)
    assert sizes == [int((0.14 - ahead) * BPS + 1e-6) // FRAME_BYTES * FRAME_BYTES]  # one send
    assert 0.14 - 0.02 < pacer.ahead(0.21) <= 0.14 + 1e-9  # one frame short at most
    assert pacer.stats.max_lateness_ms < 20 and pacer.stats.late_sends == 0  # ahead of time, not late
    # the next wake-up is the usual one: when the PBX is down to lead - batch again
    assert pacer.next_t is not None and shell.wake == pytest.approx(pacer.next_t - 0.060 + 0.040)
    shell.run_until(2.0)
    assert sum(size for _, size, _ in shell.sends) == BPS  # nothing lost or doubled


def test_pull_mode_asks_the_source_only_when_a_batch_is_due() -> None:
    pacer = Pacer(80, 2)
    assert pacer.pull(0.0) == (4, 0.0)  # nothing playing: a whole lead is due
    # sent; the next batch is due when 40 ms are left
    assert pacer.due(0.0, 4 * FRAME_BYTES) == (4 * FRAME_BYTES, pytest.approx(0.040))
    assert pacer.pull(0.0) == (0, pytest.approx(0.040))  # the source is not asked before
    assert pacer.pull(0.039) == (0, pytest.approx(0.040))
    assert pacer.pull(0.040) == (2, 0.0)
    assert pacer.pull(0.040, extra_s=0.04) == (4, 0.0)  # a top-up asks for more
    assert pacer.due(0.040, 2 * FRAME_BYTES) == (2 * FRAME_BYTES, pytest.approx(0.080))
    assert pacer.stats.lateness_hist[0] == 1  # on time
    assert pacer.pull(0.080) == (2, 0.0)
    assert pacer.due(0.080, 0) == (0, None) and not pacer.playing  # the source was dry: idle
    # the next prompt starts a fresh burst, not measured against the last one's pace
    assert pacer.due(0.5, 2 * FRAME_BYTES) == (2 * FRAME_BYTES, pytest.approx(0.5 + 0.04 - 0.08 + 0.04))
    assert sum(pacer.stats.lateness_hist) == 1 and pacer.stats.underruns == 0


def test_a_short_tail_that_fits_what_is_due_goes_at_once() -> None:
    pacer = Pacer(60, 2)
    pacer.due(0.0, 3 * FRAME_BYTES)
    now = 0.0475  # the PBX holds 12.5 ms: room for 760 bytes
    assert pacer.due(now, 700) == (640, now)  # two frames; the 60 left fit the room: at once
    assert pacer.due(now, 60) == (60, pytest.approx(0.06 + 700 / BPS + 0.04 - 0.06))  # then a batch
    assert pacer.stats.frames_sent == 3 + 2 + 1


def test_frames_of_a_rejected_post_are_unsent() -> None:
    pacer = Pacer(60, 2)
    assert pacer.due(0.0, 5 * FRAME_BYTES) == (3 * FRAME_BYTES, pytest.approx(0.04))
    pacer.unsend(3 * FRAME_BYTES, 3)
    assert (pacer.stats.bytes_sent, pacer.stats.frames_sent) == (0, 0)
    assert pacer.next_t == pytest.approx(0.0)  # they will run the clock when sent again
    assert pacer.due(0.0, 3 * FRAME_BYTES)[0] == 3 * FRAME_BYTES


def test_lateness_lands_in_its_bucket() -> None:
    pacer = Pacer(80, 2)
    pacer.due(0.0, 10 * FRAME_BYTES)  # 80 ms out; the next batch is due at 0.04
    pacer.due(0.0425, 10 * FRAME_BYTES)  # 2.5 ms late
    assert pacer.stats.lateness_hist[3] == 1  # (2, 3] ms
    assert pacer.stats.lateness_sum_s == pytest.approx(0.0025)


def test_a_lead_under_one_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="lead_ms must be >= 20"):
        Pacer(19, 1)
    assert Pacer(20, 2).batch == 1  # one frame of lead: batches of one
