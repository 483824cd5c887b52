"""Synthesis: a score becomes stereo samples, one block at a time.

Every sample is a function of its absolute position in the track (oscillator
phases are measured from each note's start, drums are pre-rendered one-shots, the
limiter and fades look at one sample at a time), so a track can be rendered in
blocks of any size, in order, and the result does not depend on where the
blocks split it. Memory stays at one block plus the drum one-shots.

Instruments are additive: a handful of harmonics with an amplitude envelope,
bright at the attack and mellowing as the note sounds. Levels are set so the mix
sits well below full scale; a soft limiter keeps every sample under
:data:`CEILING` regardless, so nothing clips even after lossy encoding.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from taskgate.workflows.builtin.media.compose import SAMPLE_RATE, Note, Score, random_for

Samples = NDArray[np.float32]

#: No sample goes beyond this (−3.1 dBFS): room for an MP3 encoder's overshoot.
CEILING = 0.7
MASTER_GAIN = 0.85
#: The highest overtone any instrument sounds (Hz); above it, harmonics are dropped.
MAX_PARTIAL_HZ = 12_000.0
DUCK_DEPTH = 0.45
DUCK_SECONDS = 0.09
FADE_IN_SECONDS = 0.01
FADE_OUT_SECONDS = 1.5
_TAU = np.float32(2 * np.pi)


@dataclass(frozen=True, slots=True)
class Voice:
    """An additive instrument.

    ``bright`` are the harmonic amplitudes at the attack; ``soft`` (if any) what the
    timbre relaxes to with time constant ``mellow`` seconds. The amplitude envelope
    is attack (linear), decay (exponential) to ``sustain``, and a linear release
    after the note is let go. A ``detune`` (cents) makes the voice two oscillators,
    one on each side.
    """

    bright: tuple[float, ...]
    soft: tuple[float, ...] | None = None
    mellow: float = 0.2
    attack: float = 0.005
    decay: float = 0.3
    sustain: float = 0.7
    release: float = 0.1
    gain: float = 0.1
    detune: float = 0.0
    vibrato: float = 0.0  # depth in semitones, at 5.5 Hz


def _saw(n: int) -> tuple[float, ...]:
    return tuple(1.0 / k for k in range(1, n + 1))


def _square(n: int) -> tuple[float, ...]:
    return tuple(1.0 / k if k % 2 else 0.0 for k in range(1, n + 1))


def _vowel(n: int, formants: tuple[float, ...] = (730.0, 1090.0, 2440.0)) -> tuple[float, ...]:
    """Harmonics of a sung "ah" on a 220 Hz voice: each harmonic weighted by how
    near it lies to a formant."""
    weights = []
    for k in range(1, n + 1):
        hz = 220.0 * k
        near = sum(np.exp(-(((hz - f) / 180.0) ** 2)) / (1 + i) for i, f in enumerate(formants))
        weights.append(float(0.25 / k + near))
    return tuple(weights)


VOICES: dict[str, Voice] = {
    "warm_pad": Voice(_saw(8), attack=0.2, decay=0.8, sustain=0.8, release=0.4, gain=0.05,
                      detune=9.0),
    "saw_pad": Voice(_saw(10), attack=0.04, decay=0.4, sustain=0.7, release=0.2, gain=0.045,
                     detune=11.0),
    "strings": Voice(_saw(8), attack=0.35, decay=1.0, sustain=0.85, release=0.6, gain=0.05,
                     detune=13.0, vibrato=0.08),
    "organ": Voice((1.0, 0.7, 0.45, 0.0, 0.3, 0.0, 0.0, 0.2), attack=0.01, decay=0.2,
                   sustain=1.0, release=0.06, gain=0.045, detune=4.0),
    "electric_piano": Voice((1.0, 0.55, 0.2, 0.12, 0.06), soft=(1.0, 0.18, 0.03), mellow=0.25,
                            attack=0.004, decay=0.9, sustain=0.35, release=0.3, gain=0.085),
    "piano": Voice((1.0, 0.6, 0.38, 0.25, 0.16, 0.1, 0.06), soft=(1.0, 0.22, 0.06),
                   mellow=0.3, attack=0.003, decay=1.0, sustain=0.15, release=0.35, gain=0.08),
    "soft_keys": Voice((1.0, 0.35, 0.12, 0.05), soft=(1.0, 0.1), mellow=0.3, attack=0.006,
                       decay=0.6, sustain=0.4, release=0.25, gain=0.16),
    "pluck": Voice(_saw(10), soft=(1.0, 0.25, 0.05), mellow=0.1, attack=0.003, decay=0.35,
                   sustain=0.2, release=0.15, gain=0.15),
    "bell": Voice((1.0, 0.0, 0.45, 0.0, 0.3, 0.0, 0.0, 0.15), soft=(1.0,), mellow=0.4,
                  attack=0.002, decay=0.9, sustain=0.05, release=0.5, gain=0.14),
    "saw_lead": Voice(_saw(12), attack=0.01, decay=0.25, sustain=0.7, release=0.1, gain=0.08,
                      detune=7.0),
    "drive_lead": Voice(_square(11), soft=(1.0, 0.0, 0.3), mellow=0.3, attack=0.008, decay=0.3,
                        sustain=0.7, release=0.1, gain=0.09),
    "synth_bass": Voice(_saw(6), soft=(1.0, 0.3, 0.08), mellow=0.1, attack=0.004, decay=0.25,
                        sustain=0.6, release=0.05, gain=0.26),
    "round_bass": Voice((1.0, 0.28, 0.07), attack=0.01, decay=0.4, sustain=0.7, release=0.07,
                        gain=0.3),
    "sub_bass": Voice((1.0, 0.12, 0.04), attack=0.006, decay=0.3, sustain=0.9, release=0.05,
                      gain=0.32),
    "pick_bass": Voice(_saw(6), soft=(1.0, 0.35, 0.1), mellow=0.15, attack=0.003, decay=0.3,
                       sustain=0.6, release=0.05, gain=0.26),
    "voice": Voice(_vowel(14), attack=0.08, decay=0.5, sustain=0.85, release=0.2, gain=0.09,
                   vibrato=0.3),
}  # fmt: skip

DRUM_GAINS = {
    "kick": 0.55,
    "snare": 0.26,
    "hat": 0.09,
    "open_hat": 0.08,
    "ride": 0.07,
    "crash": 0.09,
}
DRUM_PANS = {"kick": 0.0, "snare": 0.05, "hat": 0.3, "open_hat": 0.3, "ride": -0.3, "crash": -0.2}


def midi_hz(pitch: float) -> float:
    return float(440.0 * 2 ** ((pitch - 69) / 12))


def _pan(pan: float) -> tuple[float, float]:
    angle = (pan + 1) * np.pi / 4
    return float(np.cos(angle)), float(np.sin(angle))


def _envelope(voice: Voice, t: NDArray[np.float32], held: float) -> NDArray[np.float32]:
    attack = np.minimum(t / np.float32(voice.attack), np.float32(1))
    body = voice.sustain + (1 - voice.sustain) * np.exp(
        -np.maximum(t - voice.attack, 0) / np.float32(voice.decay)
    )
    release = np.clip(1 - (t - held) / np.float32(voice.release), 0, 1)
    out: NDArray[np.float32] = (attack * body * release).astype(np.float32, copy=False)
    return out


def _smooth(x: NDArray[np.float64], width: int) -> NDArray[np.float64]:
    """A moving average: a gentle low-pass for noise."""
    if width <= 1:
        return x
    kernel = np.full(width, 1.0 / width)
    out: NDArray[np.float64] = np.convolve(x, kernel, mode="same")
    return out


def drum_kit(score: Score) -> dict[str, Samples]:
    """One-shots for the score's drums, tuned to its key, softer for darker styles."""
    rng = random_for(score.seed, "drums")
    sr = SAMPLE_RATE
    soft = 1 + round((1 - score.style.brightness) * 6)

    def noise(seconds: float) -> NDArray[np.float64]:
        return rng.standard_normal(round(seconds * sr))

    def time(seconds: float) -> NDArray[np.float64]:
        return np.arange(round(seconds * sr)) / sr

    t = time(0.45)
    low = midi_hz(24 + score.root)  # the tonic, two octaves below the bass
    sweep = 0.035
    phase = 2 * np.pi * (low * t + (150.0 - low) * sweep * (1 - np.exp(-t / sweep)))
    # The body, a falling sine, and the beater's click, which carries the kick's
    # attack into the mid range.
    kick = np.sin(phase) * np.exp(-t / 0.16) + 0.35 * _smooth(noise(0.45), 2 + soft) * np.exp(
        -t / 0.012
    )

    t = time(0.3)
    tone = midi_hz(48 + (score.root + 7) % 12)  # the fifth
    snare = 0.45 * np.sin(2 * np.pi * tone * t) * np.exp(-t / 0.06) + 0.7 * _smooth(
        noise(0.3), soft
    ) * np.exp(-t / 0.075)

    def hiss(seconds: float, decay: float) -> NDArray[np.float64]:
        raw = noise(seconds)
        high = raw - _smooth(raw, 4)
        return _smooth(high, max(1, soft // 2)) * np.exp(-time(seconds) / decay)

    kit = {
        "kick": kick,
        "snare": snare,
        "hat": hiss(0.09, 0.018),
        "open_hat": hiss(0.4, 0.12),
        "ride": hiss(0.6, 0.25)
        + 0.2 * np.sin(2 * np.pi * 3150.0 * time(0.6)) * np.exp(-time(0.6) / 0.3),
        "crash": hiss(1.6, 0.55),
    }
    out: dict[str, Samples] = {}
    for name, sound in kit.items():
        peak = float(np.max(np.abs(sound))) or 1.0
        out[name] = (sound / peak * DRUM_GAINS[name]).astype(np.float32)
    return out


def _vinyl(score: Score) -> Samples:
    """Two seconds of record noise, looped: a soft hiss and sparse crackles."""
    rng = random_for(score.seed, "vinyl")
    n = 2 * SAMPLE_RATE
    bed = _smooth(rng.standard_normal(n), 6) * 0.004
    clicks = np.zeros(n)
    where = rng.integers(0, n, size=14)
    clicks[where] = rng.uniform(-0.05, 0.05, size=14)
    crackle = _smooth(clicks, 3)
    out: Samples = (bed + crackle).astype(np.float32)
    return out


class Renderer:
    """Renders a score's samples in blocks: ``render(start, stop)`` → (2, n) float32."""

    def __init__(self, score: Score) -> None:
        self.score = score
        self.kit = drum_kit(score)
        self.vinyl = _vinyl(score) if score.style.vinyl else None
        self._notes = score.notes
        self._starts = [n.start for n in score.notes]
        self._ends = [n.start + n.length + self._release(n) for n in score.notes]
        self._longest = max((e - n.start for e, n in zip(self._ends, self._notes, strict=True)),
                            default=0)  # fmt: skip
        self._hits = score.hits
        self._hit_starts = [h.start for h in score.hits]
        self._longest_hit = max((len(s) for s in self.kit.values()), default=0)
        self._kicks = np.array([h.start for h in score.hits if h.drum == "kick"], dtype=np.int64)
        brightness = score.style.brightness
        # Darker styles roll off the overtones further.
        self._tilt = np.float32(1.6 * (1 - brightness))
        self._tables: dict[tuple[str, int], tuple[Samples, Samples | None]] = {}

    @staticmethod
    def _release(note: Note) -> int:
        return round(VOICES[note.voice].release * SAMPLE_RATE)

    def render(self, start: int, stop: int) -> Samples:
        stop = min(stop, self.score.samples)
        n = stop - start
        out = np.zeros((2, max(0, n)), dtype=np.float32)
        if n <= 0:
            return out
        first = bisect.bisect_left(self._starts, start - self._longest)
        last = bisect.bisect_left(self._starts, stop)
        for i in range(first, last):
            if self._ends[i] > start:
                self._add_note(out, start, stop, self._notes[i], self._ends[i])
        self._duck(out, start, stop)
        first = bisect.bisect_left(self._hit_starts, start - self._longest_hit)
        last = bisect.bisect_left(self._hit_starts, stop)
        for hit in self._hits[first:last]:
            sound = self.kit[hit.drum]
            lo = max(start, hit.start)
            hi = min(stop, hit.start + len(sound))
            if hi > lo:
                piece = sound[lo - hit.start : hi - hit.start] * np.float32(hit.velocity)
                left, right = _pan(DRUM_PANS[hit.drum])
                out[0, lo - start : hi - start] += piece * np.float32(left)
                out[1, lo - start : hi - start] += piece * np.float32(right)
        if self.vinyl is not None:
            index = np.arange(start, stop) % len(self.vinyl)
            out += self.vinyl[index]
        self._master(out, start)
        return out

    def _duck(self, out: Samples, start: int, stop: int) -> None:
        """Side-chain the instruments to the kick: each kick pulls them down by
        DUCK_DEPTH and lets them back up over DUCK_SECONDS, so the kick (and the
        beat) stands out of the bass it shares its frequencies with."""
        if not self._kicks.size:
            return
        index = np.arange(start, stop)
        last = np.searchsorted(self._kicks, index, side="right") - 1
        since = (index - self._kicks[np.maximum(last, 0)]) / SAMPLE_RATE
        dip = DUCK_DEPTH * np.exp(-since / DUCK_SECONDS)
        dip[last < 0] = 0.0
        out *= (1 - dip).astype(np.float32)

    def _harmonics(self, voice_name: str, hz: float) -> tuple[Samples, Samples | None]:
        """The voice's harmonic amplitudes for a pitch: tilted by the style, and
        only those under MAX_PARTIAL_HZ."""
        voice = VOICES[voice_name]
        count = max(1, min(len(voice.bright), int(MAX_PARTIAL_HZ // hz)))
        key = (voice_name, count)
        found = self._tables.get(key)
        if found is None:
            ks = np.arange(1, count + 1, dtype=np.float32)
            tilt = ks ** (-self._tilt)

            def table(amps: tuple[float, ...]) -> Samples:
                padded = np.zeros(count, dtype=np.float32)
                used = np.asarray(amps[:count], dtype=np.float32)
                padded[: len(used)] = used
                out: Samples = (padded * tilt).astype(np.float32)
                return out

            found = (table(voice.bright), table(voice.soft) if voice.soft else None)
            self._tables[key] = found
        return found

    def _add_note(self, out: Samples, start: int, stop: int, note: Note, end: int) -> None:
        voice = VOICES[note.voice]
        lo = max(start, note.start)
        hi = min(stop, end)
        t64 = (np.arange(lo, hi, dtype=np.float64) - note.start) / SAMPLE_RATE
        t = t64.astype(np.float32)
        envelope = _envelope(voice, t, note.length / SAMPLE_RATE)
        envelope *= np.float32(note.velocity * voice.gain)
        hz = midi_hz(note.pitch)
        bright, soft = self._harmonics(note.voice, hz)
        ks = np.arange(1, len(bright) + 1, dtype=np.float32)[:, None]
        mellowing = np.exp(-t / np.float32(voice.mellow)) if soft is not None else None
        left, right = _pan(note.pan)
        cents = (-voice.detune / 2, voice.detune / 2) if voice.detune else (0.0,)
        for side, detune in enumerate(cents):
            f = hz * 2 ** (detune / 1200)
            cycles = f * t64
            if voice.vibrato:
                depth = f * (2 ** (voice.vibrato / 12) - 1)
                cycles += depth / 5.5 * (1 - np.cos(2 * np.pi * 5.5 * t64)) / (2 * np.pi)
            phase = (cycles % 1.0).astype(np.float32)
            sines = np.sin(_TAU * ks * phase[None, :])
            wave = bright @ sines
            if soft is not None and mellowing is not None:
                settled = soft @ sines
                wave = settled + (wave - settled) * mellowing
            wave *= envelope
            if len(cents) == 1:
                out[0, lo - start : hi - start] += wave * np.float32(left)
                out[1, lo - start : hi - start] += wave * np.float32(right)
            else:
                # One oscillator each side, both following the note's pan.
                gain = np.float32((left if side == 0 else right) * np.sqrt(2))
                out[side, lo - start : hi - start] += wave * gain

    def _master(self, out: Samples, start: int) -> None:
        """Gain, fades, and the soft limiter: y = C·tanh(x/C) never reaches C."""
        n = out.shape[1]
        total = self.score.samples
        fade_in = round(FADE_IN_SECONDS * SAMPLE_RATE)
        fade_out = min(round(FADE_OUT_SECONDS * SAMPLE_RATE), total // 4)
        out *= np.float32(MASTER_GAIN)
        if start < fade_in:
            index = np.arange(start, min(start + n, fade_in))
            out[:, : len(index)] *= (index / fade_in).astype(np.float32)
        if fade_out and start + n > total - fade_out:
            index = np.arange(max(start, total - fade_out), start + n)
            gain = 0.5 * (1 + np.cos(np.pi * (index - (total - fade_out)) / fade_out))
            out[:, index[0] - start :] *= gain.astype(np.float32)
        ceiling = np.float32(CEILING)
        np.tanh(out / ceiling, out=out)
        out *= ceiling
