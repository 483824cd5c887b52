"""Procedural composition: a style and a seed become a score.

A score is a tempo, a key, and timed events: notes (pad chords, bass, melody, an
echo of the melody, a wordless voice) and drum hits, all placed in samples. The
piece is built in eight-bar phrases over a four-chord progression; verses and
choruses alternate, each with its own two-bar motifs, and a motif's strong notes
land on tones of the chord under them. Everything is drawn from one random
generator seeded by the seed and the words, so a seed gives the same score.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from taskgate.workflows.builtin.media.style import SCALES, Style, key_name

SAMPLE_RATE = 44100
STEPS_PER_BAR = 16  # sixteenth notes in a 4/4 bar
BARS_PER_PHRASE = 8

# Progressions as scale degrees (0 = tonic), four bars each.
_PROGRESSIONS: dict[str, tuple[tuple[int, int, int, int], ...]] = {
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 5, 4), (3, 4, 0, 0)),
    "minor": ((0, 5, 2, 6), (0, 3, 5, 6), (0, 6, 5, 6), (0, 5, 3, 4), (5, 6, 0, 0)),
}

# Drum patterns: for each drum, (sixteenth step, velocity) within a bar.
_DRUMS: dict[str, dict[str, tuple[tuple[int, float], ...]]] = {
    "pop": {
        "kick": ((0, 1.0), (4, 0.7), (8, 1.0), (10, 0.45), (12, 0.7)),
        "snare": ((4, 0.9), (12, 0.9)),
        "hat": tuple((s, 0.35 if s % 4 else 0.7) for s in range(0, 16, 2)),
    },
    "boombap": {
        "kick": ((0, 1.0), (7, 0.5), (8, 0.9), (10, 0.7)),
        "snare": ((4, 1.0), (12, 1.0)),
        "hat": tuple((s, 0.45 if s % 4 else 0.6) for s in range(0, 16, 2)),
    },
    "four_on_the_floor": {
        "kick": ((0, 1.0), (4, 1.0), (8, 1.0), (12, 1.0)),
        "snare": ((4, 0.6), (12, 0.6)),
        "hat": ((2, 0.7), (6, 0.7), (10, 0.7), (14, 0.7)),
        "open_hat": ((14, 0.35),),
    },
    "rock": {
        "kick": ((0, 1.0), (4, 0.75), (8, 1.0), (10, 0.5), (12, 0.75)),
        "snare": ((4, 0.8), (12, 0.8)),
        "hat": tuple((s, 0.6) for s in range(0, 16, 2)),
    },
    "jazz": {
        "kick": ((0, 0.7), (4, 0.5), (8, 0.7), (12, 0.5)),
        "snare": ((4, 0.5), (12, 0.5)),
        "ride": ((0, 0.6), (4, 0.6), (6, 0.4), (8, 0.6), (12, 0.6), (14, 0.4)),
    },
    "halftime": {
        "kick": ((0, 1.0), (4, 0.6), (8, 0.6), (10, 0.5), (12, 0.6)),
        "snare": ((8, 0.9),),
        "hat": tuple((s, 0.35) for s in range(0, 16, 4)),
    },
    "brushes": {
        "kick": ((0, 0.8), (4, 0.5), (8, 0.8), (12, 0.5)),
        "snare": ((4, 0.6), (12, 0.6)),
        "hat": tuple((s, 0.3) for s in range(0, 16, 2)),
    },
}

# Bass patterns: (step, length in steps, chord tone: 0 root, 2 fifth, 7 octave).
_BASS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "pop": ((0, 3, 0), (4, 2, 0), (6, 2, 7), (8, 3, 0), (12, 2, 2), (14, 2, 0)),
    "boombap": ((0, 6, 0), (7, 1, 0), (8, 4, 2), (14, 2, 0)),
    "four_on_the_floor": ((2, 2, 0), (6, 2, 0), (10, 2, 0), (14, 2, 7)),
    "rock": tuple((s, 2, 0) for s in range(0, 16, 2)),
    "jazz": ((0, 4, 0), (4, 4, 1), (8, 4, 2), (12, 4, 3)),
    "halftime": ((0, 8, 0), (8, 6, 2)),
    "brushes": ((0, 4, 0), (4, 4, 2), (8, 4, 0), (12, 4, 2)),
}

# Rhythms of two-bar motifs: onsets in sixteenths (0..31) and lengths.
_RHYTHMS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((0, 4), (4, 2), (6, 2), (8, 6), (16, 2), (18, 2), (20, 4), (24, 8)),
    ((0, 6), (6, 2), (8, 4), (12, 4), (16, 6), (22, 2), (24, 8)),
    ((2, 2), (4, 4), (8, 2), (10, 2), (12, 4), (18, 2), (20, 2), (22, 2), (24, 6)),
    ((0, 2), (2, 2), (4, 2), (6, 2), (8, 8), (16, 2), (18, 2), (20, 2), (22, 2), (24, 8)),
    ((0, 8), (8, 4), (12, 4), (16, 12)),
    ((0, 3), (3, 3), (6, 2), (8, 4), (14, 2), (16, 3), (19, 3), (22, 2), (24, 8)),
)


class Note(NamedTuple):
    """A note: where it starts and how long it is held (samples), MIDI pitch,
    velocity 0..1, the instrument that plays it, and its place in the stereo field
    (-1 left .. 1 right)."""

    start: int
    length: int
    pitch: float
    velocity: float
    voice: str
    pan: float


class Hit(NamedTuple):
    """A drum hit: where it starts (samples), which drum, how hard."""

    start: int
    drum: str
    velocity: float


@dataclass(frozen=True, slots=True)
class Score:
    """What to render: a tempo, a key and timed events."""

    style: Style
    seed: int
    bpm: int
    root: int
    mode: str
    samples: int
    notes: tuple[Note, ...]
    hits: tuple[Hit, ...]

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    @property
    def key(self) -> str:
        """The tonic's name ("C", "F#", "Bb"…)."""
        return key_name(self.root)


def random_for(seed: int, *words: str) -> np.random.Generator:
    """A generator that depends on the seed and on the words."""
    text = "\x1f".join(word.strip().lower() for word in words)
    return np.random.default_rng([seed, zlib.crc32(text.encode())])


class _Grid:
    """Sixteenth-note steps to sample positions, with swing on the off-beat eighths."""

    def __init__(self, bpm: int, swing: float) -> None:
        self.step = SAMPLE_RATE * 60 / bpm / 4
        self.swing = swing

    def at(self, step: float) -> int:
        offset = self.swing * 2 * self.step if int(step) % 4 == 2 else 0.0
        return round(step * self.step + offset)

    def length(self, start: float, steps: float) -> int:
        return max(1, self.at(start + steps) - self.at(start))


def _chord(scale: tuple[int, ...], degree: int, size: int) -> list[int]:
    """Scale indices (7 per octave) of a chord stacked in thirds on ``degree``."""
    return [degree + 2 * i for i in range(size)]


def _to_midi(scale: tuple[int, ...], root: int, index: int, octave: int) -> int:
    return 12 * (octave + 1 + index // 7) + root + scale[index % 7]


def _motif(rng: np.random.Generator, density: float) -> list[tuple[int, int, int]]:
    """A two-bar motif: (onset, length, scale index relative to the tonic)."""
    rhythms = [r for r in _RHYTHMS if (len(r) <= 8) == (density < 0.55)] or list(_RHYTHMS)
    rhythm = rhythms[int(rng.integers(len(rhythms)))]
    position = int(rng.integers(0, 5))
    out = []
    for onset, length in rhythm:
        out.append((onset, length, position))
        position = int(np.clip(position + rng.choice([-2, -1, -1, 1, 1, 2, 0, 3]), -2, 9))
    return out


def _nearest_chord_tone(index: int, chord: list[int]) -> int:
    tones = [t + 7 * k for t in chord for k in range(-2, 3)]
    return min(tones, key=lambda t: (abs(t - index), t))


def compose(
    style: Style,
    *,
    seed: int,
    seconds: float,
    instrumental: bool = True,
    words: tuple[str, ...] = (),
) -> Score:
    """Compose ``seconds`` of music in ``style``: the same arguments, the same score."""
    rng = random_for(seed, *words)
    bpm = style.fixed_bpm or int(rng.integers(style.bpm[0], style.bpm[1] + 1))
    root = style.fixed_root if style.fixed_root is not None else int(rng.integers(12))
    mode = style.fixed_mode or ("minor" if rng.random() < style.minor else "major")
    scale = SCALES[mode]
    samples = round(seconds * SAMPLE_RATE)
    grid = _Grid(bpm, style.swing)
    bars = math.ceil(samples / (grid.step * STEPS_PER_BAR)) + 1
    choices = _PROGRESSIONS[mode]
    verse = choices[int(rng.integers(len(choices)))]
    chorus = choices[int(rng.integers(len(choices)))]
    motifs = [_motif(rng, style.density) for _ in range(4)]
    drums = _DRUMS[style.drums]
    bass_pattern = _BASS.get(style.drums, _BASS["pop"])
    lead_octave = 4
    notes: list[Note] = []
    hits: list[Hit] = []
    # Where the melody's echo falls behind it, in sixteenths.
    echo = 3.0

    for bar in range(bars):
        phrase, bar_in_phrase = divmod(bar, BARS_PER_PHRASE)
        chorus_phrase = phrase % 2 == 1
        progression = chorus if chorus_phrase else verse
        degree = progression[bar_in_phrase % 4]
        chord = _chord(scale, degree, style.chord_notes)
        base = bar * STEPS_PER_BAR

        # Pad: the chord, voiced around middle C, held or struck on the comp steps.
        strikes = style.comp or (0,)
        for i, onset in enumerate(strikes):
            end = strikes[i + 1] if i + 1 < len(strikes) else STEPS_PER_BAR
            held = end - onset if style.comp else STEPS_PER_BAR
            for tone in chord:
                pitch = _to_midi(scale, root, tone, 3)
                if pitch > 67:
                    pitch -= 12
                notes.append(
                    Note(
                        grid.at(base + onset),
                        grid.length(base + onset, held),
                        pitch,
                        0.75 if onset == 0 else 0.55,
                        style.pad,
                        0.0,
                    )
                )

        # Bass: the chord's root, fifth or octave, low.
        for onset, length, tone in bass_pattern:
            index = chord[0] if tone == 7 else chord[min(tone, len(chord) - 1)]
            pitch = _to_midi(scale, root, index, 1)
            while pitch > 47:
                pitch -= 12
            while pitch < 33:
                pitch += 12
            if tone == 7:
                pitch += 12
            notes.append(
                Note(
                    grid.at(base + onset),
                    grid.length(base + onset, length * 0.9),
                    pitch,
                    0.9 if onset == 0 else 0.75,
                    style.bass,
                    0.0,
                )
            )

        # Drums, with a crash at the start of each phrase after the first.
        for drum, pattern in drums.items():
            for onset, velocity in pattern:
                jitter = float(rng.uniform(-0.06, 0.06))
                hits.append(Hit(grid.at(base + onset), drum, min(1.0, velocity + jitter)))
        if bar_in_phrase == 0 and bar > 0:
            hits.append(Hit(grid.at(base), "crash", 0.7))

        # Melody: rests in the first bar, then the phrase's motifs; the last note of
        # a phrase resolves to the tonic.
        if bar == 0 and bars > 3:
            continue
        motif_index = (2 if chorus_phrase else 0) + (bar_in_phrase // 2) % 2
        motif = motifs[motif_index]
        half = STEPS_PER_BAR * (bar_in_phrase % 2)
        for k, (onset, length, index) in enumerate(motif):
            if not half <= onset < half + STEPS_PER_BAR:
                continue
            step = onset - half
            if step % 4 == 0:
                index = _nearest_chord_tone(index, chord)
            last = bar_in_phrase == BARS_PER_PHRASE - 1 and k == len(motif) - 1
            if last:
                index = 7 if index > 3 else 0
            pitch = _to_midi(scale, root, index, lead_octave)
            start = base + step
            velocity = 0.8 if step % 4 == 0 else 0.65
            lead_length = grid.length(start, min(length, STEPS_PER_BAR - step) * 0.85)
            notes.append(Note(grid.at(start), lead_length, pitch, velocity, style.lead, -0.15))
            notes.append(
                Note(grid.at(start + echo), lead_length, pitch, velocity * 0.35, style.lead, 0.6)
            )
            if not instrumental:
                notes.append(Note(grid.at(start), lead_length, pitch - 12, velocity, "voice", 0.1))

    notes = [n for n in notes if n.start < samples]
    hits = [h for h in hits if h.start < samples]
    notes.sort(key=lambda n: n.start)
    hits.sort(key=lambda h: h.start)
    return Score(style, seed, bpm, root, mode, samples, tuple(notes), tuple(hits))
