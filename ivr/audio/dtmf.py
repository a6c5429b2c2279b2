"""In-band DTMF detection and generation (ITU-T Q.23/Q.24 style), vectorised numpy.

Detection: every ``hop_ms`` a Hann-windowed ``window_ms`` slice of the signal is correlated
with a precomputed matrix of complex exponentials - three probes (f*(1-rho), f, f*(1+rho))
for each of the 8 DTMF frequencies - so a whole chunk of windows costs one matrix product.
From the three probes the peak power and the actual tone frequency are interpolated, and a
window is a candidate key when all of these hold:

* one low-group and one high-group tone, each above ``min_level_db`` (dBFS, sine-relative);
* their summed power is at least ``min_energy_ratio`` of the window's total power
  (noise and speech spread energy elsewhere);
* twist (high minus low, dB) within +-``max_twist_db``;
* each tone at least ``min_dominance_db`` above every other tone of its group;
* each tone's estimated frequency within ``max_freq_dev`` (relative) of nominal, so
  +-1.5% is accepted and +-3.5% rejected.

A key is reported once when ``accept_windows`` consecutive windows agree, and released after
``release_windows`` consecutive windows without it, so 40 ms tones with 40 ms gaps work and a
held key is reported once. Windows sit at fixed positions from stream start, so the chunk
sizes given to :meth:`DtmfDetector.feed` never change the result.

Defaults were tuned on generated tones and espeak-ng speech (see tests/test_audio_dtmf.py):
25 ms windows every 5 ms; ``min_energy_ratio=0.85`` is what keeps speech out (0 digits in
11 minutes of varied TTS voices, where 0.6-0.7 let high female voices through) while 12 dB
SNR still passes; the twist limit is 10 dB so that a true 8 dB twist survives the ~1 dB
estimation error under noise (12 dB is rejected).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

LOW_FREQS = (697.0, 770.0, 852.0, 941.0)
"""Row frequencies in Hz."""
HIGH_FREQS = (1209.0, 1336.0, 1477.0, 1633.0)
"""Column frequencies in Hz."""
KEYS = ("123A", "456B", "789C", "*0#D")
"""KEYS[row][col] is the key for LOW_FREQS[row] + HIGH_FREQS[col]."""

_KEY_FREQS = {KEYS[r][c]: (LOW_FREQS[r], HIGH_FREQS[c]) for r in range(4) for c in range(4)}
_FREQS = np.array(LOW_FREQS + HIGH_FREQS)
_FULL_SCALE_SINE_POWER = 32768.0**2 / 2  # 0 dB reference for levels
# Probe spacing: half the accept/reject midpoint keeps interpolation in the main lobe.
_RHO = 0.02


@functools.lru_cache(maxsize=8)
def _probe_basis(sample_rate: int, window: int) -> tuple[np.ndarray, np.ndarray, int, float]:
    """The windowed probe matrix (window x 2*probes: cos | sin), the window's power weights,
    the number of probes and the basis' gain bound. One per setting, shared read-only by every
    detector (77 KB at 8 kHz: a third of a call's memory if each call had its own)."""
    n = np.arange(window)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * (n + 0.5) / window)  # symmetric Hann, no zero ends
    probes = (_FREQS[:, None] * (1 + _RHO * np.array([-1.0, 0.0, 1.0]))[None, :]).ravel()
    phase = 2 * np.pi * np.outer(n, probes) / sample_rate
    # Real cos|sin halves: one float64 GEMM is faster than a complex one for these sizes.
    # Scaled so |X|^2 is the sine power A^2/2 of a tone exactly on a probe.
    scale = np.sqrt(2.0) / w.sum()
    basis = scale * np.concatenate([w[:, None] * np.cos(phase), w[:, None] * np.sin(phase)], axis=1)
    w2 = w**2 / (w**2).sum()  # weighted mean square = window power
    for a in (basis, w2):
        a.flags.writeable = False
    return basis, w2, probes.size, float(scale**2 * (w**2).sum())


def generate_dtmf(
    digits: str,
    tone_ms: float = 100,
    gap_ms: float = 100,
    rate: int = 8000,
    amplitude: float = 0.25,
    *,
    twist_db: float = 0.0,
    freq_error: float = 0.0,
) -> np.ndarray:
    """Return int16 audio of ``digits`` as DTMF: for each digit a tone then a gap.

    ``amplitude`` is each tone's peak as a fraction of full scale (the sum peaks at
    2*amplitude). ``twist_db`` raises the high tone relative to the low one (negative:
    reverse twist); ``freq_error`` shifts both frequencies by a relative amount (0.015 =
    +1.5%). The last two exist to test detectors.
    """
    if not 0 < amplitude <= 0.5:
        raise ValueError(f"generate_dtmf: amplitude must be in (0, 0.5], got {amplitude}")
    bad = [d for d in digits if d.upper() not in _KEY_FREQS]
    if bad:
        raise ValueError(f"generate_dtmf: not DTMF keys: {''.join(bad)!r} (allowed: 0-9 * # A-D)")
    n_tone = int(round(tone_ms * rate / 1000))
    n_gap = int(round(gap_ms * rate / 1000))
    t = np.arange(n_tone) / rate
    # Split the twist evenly so the louder tone never exceeds the requested amplitude by much.
    a_low = amplitude * 10 ** (-twist_db / 40)
    a_high = amplitude * 10 ** (twist_db / 40)
    out = np.zeros(len(digits) * (n_tone + n_gap), dtype=np.float64)
    for i, d in enumerate(digits.upper()):
        fl, fh = _KEY_FREQS[d]
        s = i * (n_tone + n_gap)
        out[s:s + n_tone] = (a_low * np.sin(2 * np.pi * fl * (1 + freq_error) * t)
                             + a_high * np.sin(2 * np.pi * fh * (1 + freq_error) * t))
    return np.clip(np.rint(out * 32767), -32768, 32767).astype(np.int16)


class DtmfDetector:
    """Streaming DTMF detector; feed int16 samples, get each key press once.

    All tuning knobs are keyword arguments with defaults that meet Q.24-like limits; see the
    module docstring for what each one means.
    """

    def __init__(
        self,
        sample_rate: int = 8000,
        *,
        window_ms: float = 25.0,
        hop_ms: float = 5.0,
        min_level_db: float = -40.0,
        min_energy_ratio: float = 0.85,
        max_twist_db: float = 10.0,
        min_dominance_db: float = 8.0,
        max_freq_dev: float = 0.025,
        accept_ms: float = 20.0,
        release_ms: float = 15.0,
    ) -> None:
        if sample_rate < 4000:
            raise ValueError(f"DtmfDetector: sample_rate must be >= 4000 Hz to hold 1633 Hz, got {sample_rate}")
        self.sample_rate = sample_rate
        self.window = int(round(window_ms * sample_rate / 1000))
        self.hop = max(1, int(round(hop_ms * sample_rate / 1000)))
        self.min_power = _FULL_SCALE_SINE_POWER * 10 ** (min_level_db / 10)
        self.min_energy_ratio = min_energy_ratio
        self.max_twist_db = max_twist_db
        self.min_dominance = 10 ** (min_dominance_db / 10)
        self.max_freq_dev = max_freq_dev
        self.accept_windows = max(2, int(round(accept_ms / hop_ms)))
        self.release_windows = max(1, int(round(release_ms / hop_ms)))
        self._rho = _RHO
        self._basis, self._w2, self._n_probes, basis_gain = _probe_basis(sample_rate, self.window)
        # Cauchy-Schwarz: no probe of a window can exceed basis_gain * sum(x^2) over that
        # window. A buffer too quiet to reach the gate below in any probe skips the GEMM.
        self._quiet_energy = 0.25 * self.min_power / basis_gain
        self._gate_ratio = 0.8 * self.min_energy_ratio  # the cheap gate of _classify
        self._gate_level = 0.25 * self.min_power
        # Detectors with equal settings have equal bases: classify_many stacks their windows.
        self._batch_key = (sample_rate, self.window, self.hop, self._gate_ratio, self._gate_level)
        self.reset()

    # -- public API ---------------------------------------------------------------------

    def reset(self) -> None:
        """Forget all buffered audio and state (start of a new stream)."""
        self._buf = np.zeros(0, dtype=np.float64)  # samples not yet consumed by a window
        self._pos = 0  # stream sample index of _buf[0]
        self._tail_bound = np.inf  # an upper bound of sum(_buf**2) (inf: unknown)
        self._run_key: str | None = None
        self._run_len = 0
        self._run_start = 0
        self._held: str | None = None
        self._miss = 0
        self._last_cand: str | None = None

    @property
    def tone_active(self) -> bool:
        """True while a DTMF tone is being heard now (latest window or a held key)."""
        return self._held is not None or self._last_cand is not None

    def feed(self, samples: np.ndarray) -> list[str]:
        """Process int16 samples of any length; return the keys newly pressed, in order."""
        return [d for d, _ in self.feed_timed(samples)]

    def feed_timed(self, samples: np.ndarray) -> list[tuple[str, float]]:
        """Like :meth:`feed` but each key comes with its onset in stream seconds.

        The onset is the start of the first window of the accepting run (within ~one
        window of the true tone start).
        """
        cands, pos = self._windows(samples)
        return [(d, t) for d, t, _ in self._advance(cands, pos)]

    def feed_frames(self, samples: np.ndarray, frame_samples: int) -> tuple[list[tuple[str, float, int]], np.ndarray | None]:
        """Process a block of whole frames in one numpy pass, as if fed one frame at a time.

        Returns the keys newly pressed as ``(key, onset s, frame)`` - ``frame`` is the index
        (in this block) of the frame whose arrival completed the accepting window - and, per
        frame, what :attr:`tone_active` would have been right after it: a bool array, or None
        when it is False for every frame (the common case, no allocation).
        """
        staged = self.stage_frames(samples, frame_samples)
        return self.finish_frames(staged, self.classify_staged(staged))

    def stage_frames(self, samples: np.ndarray, frame_samples: int,
                     frame_energies: list[float] | None = None) -> StagedBlock:
        """First step of :meth:`feed_frames`: buffer the block, cut its windows. The windows
        of many detectors can then be classified together (:func:`classify_many`).

        ``frame_energies`` (each frame's mean square, e.g. from the VAD's pass) lets a quiet
        block skip even the buffer arithmetic: when they bound the buffer's energy below what
        any tone needs, the block is only counted (same result as cutting it)."""
        samples = np.asarray(samples)
        if frame_samples <= 0 or samples.ndim != 1 or samples.size % frame_samples:
            raise ValueError(f"DtmfDetector.feed_frames: expected whole frames of {frame_samples} samples, "
                             f"got shape {samples.shape}")
        block_start = self._pos + self._buf.size  # stream sample of samples[0]
        tone_before = self.tone_active
        n_frames = samples.size // frame_samples
        if frame_energies is not None and self._tail_bound + sum(frame_energies) * frame_samples < self._quiet_energy:
            pos, n_win = self._skip_quiet(samples, frame_samples, frame_energies)
            return StagedBlock(None, pos, block_start, n_frames, frame_samples, tone_before, n_win)
        frames, pos, n_win = self._cut_windows(samples)
        self._tail_bound = self._bound_tail(frame_samples, frame_energies) if frame_energies is not None else np.inf
        return StagedBlock(frames, pos, block_start, n_frames, frame_samples, tone_before, n_win)

    def classify_staged(self, staged: StagedBlock) -> list[str | None] | None:
        """Second step: the candidate key of each staged window (None: none or all quiet)."""
        return None if staged.frames is None else self._classify(staged.frames)

    def finish_frames(self, staged: StagedBlock, cands: list[str | None] | None
                      ) -> tuple[list[tuple[str, float, int]], np.ndarray | None]:
        """Last step: run the state machine over the candidates; see :meth:`feed_frames`."""
        pos, block_start, frame_samples, n_frames = staged.pos, staged.block_start, staged.frame_samples, staged.n_frames
        tone_before = staged.tone_before
        cands = self._quiet_cands(cands, staged.n_windows)
        states: list[bool] | None = [] if cands is not None else None
        keys = self._advance(cands, pos, states)
        if not keys and not states and not tone_before:
            return [], None  # idle and nothing heard
        # Window i was complete once the frame holding its last sample had arrived.
        w0 = pos + self.window - block_start + frame_samples - 1
        frame_of = lambda i: (w0 + i * self.hop) // frame_samples - 1  # noqa: E731
        out = [(d, t, frame_of(i)) for d, t, i in keys]
        if not states:
            return out, (np.ones(n_frames, dtype=bool) if tone_before else None)
        win_frames = frame_of(np.arange(len(states)))
        last = np.searchsorted(win_frames, np.arange(n_frames), side="right") - 1
        tone = np.where(last >= 0, np.asarray(states)[np.maximum(last, 0)], tone_before)
        return out, (tone if tone.any() else None)

    def flush(self) -> list[str]:
        """End of stream: pad the buffered tail with silence, report any last key, reset."""
        out: list[str] = []
        if self._buf.size:
            pad = np.zeros(self.window, dtype=np.int16)
            tail = np.concatenate([np.rint(self._buf).astype(np.int16), pad])
            self._buf = np.zeros(0)
            out = self.feed(tail)
        self.reset()
        return out

    # -- internals ----------------------------------------------------------------------

    def _skip_quiet(self, samples: np.ndarray, frame_samples: int, energies: list[float]) -> tuple[int, int]:
        """:meth:`_cut_windows` for a block known to be too quiet for any tone: the windows
        are only counted and the unconsumed tail kept (as int16, no float copy)."""
        pos = self._pos
        total = self._buf.size + samples.size
        n_win = (total - self.window) // self.hop + 1 if total >= self.window else 0
        consumed = n_win * self.hop
        keep = total - consumed
        if keep <= samples.size:
            self._buf = samples[samples.size - keep:]
        else:  # the tail reaches back into the previous buffer (blocks shorter than a window)
            self._buf = np.concatenate([self._buf[self._buf.size - (keep - samples.size):], samples.astype(self._buf.dtype)])
        self._pos += consumed
        self._tail_bound = self._bound_tail(frame_samples, energies)
        return pos, n_win

    def _bound_tail(self, frame_samples: int, energies: list[float]) -> float:
        """An upper bound of the energy (sum of squares) of the buffered tail: the energy of the
        last frames that hold it (the whole block plus the old bound, if it reaches back further).
        ``energies`` are the block's frame mean squares."""
        k = -(-self._buf.size // frame_samples)
        if k <= len(energies):
            return float(sum(energies[len(energies) - k:])) * frame_samples
        return self._tail_bound + float(sum(energies)) * frame_samples

    def _windows(self, samples: np.ndarray) -> tuple[list[str | None] | None, int]:
        """Buffer ``samples``; return the candidate key of every window now complete (None:
        no window, or all quiet) and the stream sample where the first window starts."""
        frames, pos, n_win = self._cut_windows(samples)
        self._tail_bound = np.inf  # fed without frame energies: the tail's energy is unknown
        return self._quiet_cands(None if frames is None else self._classify(frames), n_win), pos

    def _cut_windows(self, samples: np.ndarray) -> tuple[np.ndarray | None, int, int]:
        """Buffer ``samples``; return the windows now complete (None: none, or all too quiet
        to hold a tone), the stream sample where the first window starts, and how many
        windows were cut."""
        samples = np.asarray(samples)
        if samples.dtype != np.int16:
            raise TypeError(f"DtmfDetector.feed: expected int16 samples, got {samples.dtype}")
        if samples.ndim != 1:
            raise ValueError(f"DtmfDetector.feed: expected 1-D samples, got shape {samples.shape}")
        if self._buf.size:
            buf = np.concatenate([self._buf, samples], dtype=np.float64)
        else:
            buf = samples.astype(np.float64)
        pos = self._pos
        if buf.size < self.window:
            self._buf = buf
            return None, pos, 0
        n_win = (buf.size - self.window) // self.hop + 1
        # A strided view of every window, no copy (sliding_window_view/as_strided cost ~3-10 us).
        if not buf.flags.c_contiguous:
            buf = np.ascontiguousarray(buf)
        frames: np.ndarray | None = np.ndarray((n_win, self.window), np.float64, buf, 0, (self.hop * 8, 8))
        span = buf[: (n_win - 1) * self.hop + self.window]
        if float(np.dot(span, span)) < self._quiet_energy:  # silence or line noise: no tone possible
            frames = None
        consumed = n_win * self.hop
        self._buf = buf[consumed:].copy()
        self._pos += consumed
        return frames, pos, n_win  # each caller sets _tail_bound from what it knows of the frames

    def _quiet_cands(self, cands: list[str | None] | None, n_win: int) -> list[str | None] | None:
        if cands is None and n_win and (self._last_cand is not None or self._held is not None):
            return [None] * n_win  # quiet, but a tone was just heard: the state machine moves
        return cands

    def _gate(self, power: np.ndarray, total: np.ndarray) -> np.ndarray:
        """The cheap test of each window (rows of ``power``, probe powers): could it hold a tone?"""
        n = len(power)
        best = power.reshape(n, 2, 12).max(axis=2)  # strongest probe of the low | high group
        best += 1e-9
        gate = best.sum(axis=1) >= self._gate_ratio * total
        gate &= best.min(axis=1) >= self._gate_level
        return gate

    def _probe_power(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """|X|^2 per probe and the window power, for each row of ``frames``."""
        y = frames @ self._basis
        y *= y
        p = self._n_probes
        power = y[:, :p]
        power += y[:, p:]  # |X|^2 per probe, in place: a view of y, no new array
        total = (frames * frames) @ self._w2 + 1e-9
        return power, total

    def _classify(self, frames: np.ndarray) -> list[str | None]:
        """Return the candidate key (or None) for each row of ``frames`` (windows x samples)."""
        n = len(frames)
        power, total = self._probe_power(frames)
        # Cheap gate first: most windows (silence, speech) fail the energy test, and the full
        # set of checks costs ~20 numpy calls. The 0.8 and 0.25 factors cover interpolation
        # gain. Without the level test, digital silence (all powers ~1e-9) passed the ratio.
        # Few numpy calls here: each costs ~1 us whatever its size. The 1e-9 (kept from the
        # full path's log) is added after the max: rounding is monotonic, same result.
        if not self._gate(power, total).any():
            return [None] * n
        return self._classify_gated(frames, power, total)

    def _classify_gated(self, frames: np.ndarray, power: np.ndarray, total: np.ndarray) -> list[str | None]:
        """The full checks, for windows of which at least one passed the cheap gate."""
        n = len(frames)
        power = (power + 1e-9).reshape(n, 8, 3)
        lg = np.log(power)
        a, b, c = lg[..., 0], lg[..., 1], lg[..., 2]
        den = a - 2 * b + c
        # Gaussian (log-parabolic) interpolation of the peak between the three probes.
        with np.errstate(divide="ignore", invalid="ignore"):
            offs = np.where(den < 0, 0.5 * (a - c) / den, np.where(a > c, -1.0, 1.0) * 9.0)
        offs = np.clip(offs, -9.0, 9.0)
        peak = np.exp(b - 0.25 * (a - c) * np.clip(offs, -1.0, 1.0))
        peak = np.maximum(peak, power.max(axis=2))
        nominal = power[..., 1]

        rows = np.arange(len(frames))
        lo = np.argmax(peak[:, :4], axis=1)
        hi = 4 + np.argmax(peak[:, 4:], axis=1)
        p_lo, p_hi = peak[rows, lo], peak[rows, hi]

        ok = (p_lo >= self.min_power) & (p_hi >= self.min_power)
        ok &= (p_lo + p_hi) >= self.min_energy_ratio * total
        twist = np.abs(np.log10(p_hi / p_lo)) * 10
        ok &= twist <= self.max_twist_db
        # Dominance against the other tones' nominal probes: their off-centre probes lean
        # toward the winner and would overstate leakage.
        others_lo = nominal[:, :4].copy()
        others_lo[rows, lo] = 0
        others_hi = nominal[:, 4:].copy()
        others_hi[rows, hi - 4] = 0
        ok &= p_lo >= self.min_dominance * others_lo.max(axis=1)
        ok &= p_hi >= self.min_dominance * others_hi.max(axis=1)
        ok &= np.abs(offs[rows, lo]) * self._rho <= self.max_freq_dev
        ok &= np.abs(offs[rows, hi]) * self._rho <= self.max_freq_dev
        return [KEYS[lo[i]][hi[i] - 4] if ok[i] else None for i in range(len(frames))]

    def _advance(self, cands: list[str | None] | None, pos: int,
                 states: list[bool] | None = None) -> list[tuple[str, float, int]]:
        """Run the accept/release state machine over per-window candidates; return each new
        key with its onset (s) and the index of the window that accepted it. ``states``, if
        given, gets :attr:`tone_active` after every window."""
        out: list[tuple[str, float, int]] = []
        if not cands or (self._last_cand is None and self._held is None and not any(cands)):
            return out  # idle and nothing heard: no state to move
        for i, cand in enumerate(cands):
            start = pos + i * self.hop
            if cand is not None and cand == self._run_key:
                self._run_len += 1
            else:
                self._run_key, self._run_len, self._run_start = cand, 1, start
            if self._held is not None:
                if cand == self._held:
                    self._miss = 0
                else:
                    self._miss += 1
                    if self._miss >= self.release_windows:
                        self._held = None
            if cand is not None and self._held is None and self._run_len >= self.accept_windows:
                self._held, self._miss = cand, 0
                out.append((cand, self._run_start / self.sample_rate, i))
            self._last_cand = cand
            if states is not None:
                states.append(self._held is not None or cand is not None)
        return out


@dataclass
class StagedBlock:
    """A block cut into windows by :meth:`DtmfDetector.stage_frames`, not yet classified."""

    frames: np.ndarray | None  # windows x samples (a view of the detector's buffer), None if none/quiet
    pos: int  # stream sample where the first window starts
    block_start: int  # stream sample of the block's first sample
    n_frames: int
    frame_samples: int
    tone_before: bool  # tone_active before the block
    n_windows: int = 0  # windows cut (also when quiet)


def classify_many(detectors: list[DtmfDetector], staged: list[StagedBlock]) -> list[list[str | None] | None]:
    """:meth:`DtmfDetector.classify_staged` for many detectors in one matrix product.

    Hundreds of calls each classifying ~8 windows per block pay ~15 numpy calls each, whatever
    the size; stacked, the probe powers and the cheap gate cost ~15 calls for all of them. Only
    a detector whose windows pass the gate (a tone may be there) runs the full checks, on its
    own rows. The detectors must share their settings (same basis).
    """
    out: list[list[str | None] | None] = [None] * len(staged)
    live = [i for i, st in enumerate(staged) if st.frames is not None]
    if len(live) < 2 or len({detectors[i]._batch_key for i in live}) > 1:
        for i in live:
            out[i] = detectors[i].classify_staged(staged[i])
        return out
    first = detectors[live[0]]
    stacked = np.concatenate([staged[i].frames for i in live])
    power, total = first._probe_power(stacked)
    gate = first._gate(power, total)
    if not gate.any():
        for i in live:
            out[i] = [None] * len(staged[i].frames)  # type: ignore[arg-type]
        return out
    row = 0
    for i in live:
        frames = staged[i].frames
        assert frames is not None
        n = len(frames)
        if gate[row : row + n].any():
            out[i] = detectors[i]._classify_gated(frames, power[row : row + n], total[row : row + n])
        else:
            out[i] = [None] * n
        row += n
    return out
