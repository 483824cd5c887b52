"""From words to musical choices: what a prompt and its tags ask for.

A :class:`Style` holds the ranges a composition draws from (tempo, mode,
brightness, drum pattern, instruments). Genre words pick a base style ("lofi",
"pop", "house"…); mood words shift it ("upbeat" is faster and brighter, "chill"
slower and softer); an explicit ``"92 bpm"`` or ``"in F# minor"`` wins over both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
}
MIN_BPM = 60
MAX_BPM = 180

_PITCH_CLASS = {
    "C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11,
}  # fmt: skip
_BPM = re.compile(r"\b(\d{2,3})\s*bpm\b", re.IGNORECASE)
# The letter must be a capital: "a major hit" names no key, "A major" does.
_KEY = re.compile(r"\b([A-G])([#♯b♭]?)[\s-]*(major|minor|maj|min)\b")
_WORD = re.compile(r"[\w#♯♭]+(?:[-'][\w]+)*", re.UNICODE)


@dataclass(frozen=True, slots=True)
class Style:
    """The ranges and sounds a composition draws from."""

    name: str
    bpm: tuple[int, int]
    #: Chance of a minor key when the words do not settle it.
    minor: float
    #: 0 (dark, soft) to 1 (bright): how many overtones the instruments carry.
    brightness: float
    drums: str
    #: Delay of the off-beat eighths, as a fraction of an eighth.
    swing: float
    pad: str
    lead: str
    bass: str
    #: Chords of three notes, or four (sevenths).
    chord_notes: int
    #: Steps of sixteenths at which the pad strikes; empty: it holds the bar.
    comp: tuple[int, ...]
    #: How busy the melody is, 0..1.
    density: float
    #: A quiet noise bed (record crackle).
    vinyl: bool = False
    #: A tempo the words asked for, or a key and mode.
    fixed_bpm: int | None = None
    fixed_root: int | None = None
    fixed_mode: str | None = None


_DEFAULT = Style(
    name="pop",
    bpm=(96, 116),
    minor=0.4,
    brightness=0.6,
    drums="pop",
    swing=0.0,
    pad="warm_pad",
    lead="pluck",
    bass="synth_bass",
    chord_notes=3,
    comp=(),
    density=0.6,
)

# Genre words, most specific first: the first one found in the tags, then in
# the prompt, sets the base style.
_GENRES: tuple[tuple[frozenset[str], Style], ...] = (
    (
        frozenset({"lofi", "lo-fi", "lo_fi", "chillhop", "study"}),
        replace(
            _DEFAULT,
            name="lofi",
            bpm=(72, 86),
            minor=0.6,
            brightness=0.25,
            drums="boombap",
            swing=0.18,
            pad="electric_piano",
            lead="soft_keys",
            bass="round_bass",
            chord_notes=4,
            comp=(0, 6, 10),
            density=0.45,
            vinyl=True,
        ),
    ),
    (
        frozenset({"house", "edm", "techno", "dance", "trance", "electronic", "club", "disco"}),
        replace(
            _DEFAULT,
            name="dance",
            bpm=(120, 128),
            minor=0.5,
            brightness=0.85,
            drums="four_on_the_floor",
            pad="saw_pad",
            lead="saw_lead",
            bass="sub_bass",
            comp=(0, 8),
            density=0.55,
        ),
    ),
    (
        frozenset({"rock", "punk", "metal", "grunge", "indie"}),
        replace(
            _DEFAULT,
            name="rock",
            bpm=(112, 140),
            minor=0.5,
            brightness=0.8,
            drums="rock",
            pad="organ",
            lead="drive_lead",
            bass="pick_bass",
            comp=(0, 4, 8, 12),
            density=0.6,
        ),
    ),
    (
        frozenset({"hiphop", "hip-hop", "rap", "trap", "boom-bap", "boombap", "rnb", "r&b"}),
        replace(
            _DEFAULT,
            name="hiphop",
            bpm=(84, 96),
            minor=0.7,
            brightness=0.45,
            drums="boombap",
            swing=0.1,
            pad="electric_piano",
            lead="bell",
            bass="sub_bass",
            chord_notes=4,
            comp=(0, 10),
            density=0.4,
        ),
    ),
    (
        frozenset({"jazz", "jazzy", "swing", "bossa", "soul", "funk"}),
        replace(
            _DEFAULT,
            name="jazz",
            bpm=(96, 132),
            minor=0.4,
            brightness=0.45,
            drums="jazz",
            swing=0.3,
            pad="electric_piano",
            lead="soft_keys",
            bass="round_bass",
            chord_notes=4,
            comp=(0, 6, 12),
            density=0.65,
        ),
    ),
    (
        frozenset(
            {"ambient", "cinematic", "epic", "orchestral", "soundtrack", "score", "meditation"}
        ),
        replace(
            _DEFAULT,
            name="cinematic",
            bpm=(66, 84),
            minor=0.6,
            brightness=0.4,
            drums="halftime",
            pad="strings",
            lead="bell",
            bass="round_bass",
            chord_notes=3,
            density=0.35,
        ),
    ),
    (
        frozenset({"piano", "acoustic", "folk", "ballad", "country", "classical"}),
        replace(
            _DEFAULT,
            name="acoustic",
            bpm=(80, 104),
            minor=0.4,
            brightness=0.5,
            drums="brushes",
            pad="piano",
            lead="piano",
            bass="round_bass",
            comp=(0, 4, 8, 12),
            density=0.55,
        ),
    ),
    (frozenset({"pop", "synthpop", "k-pop", "kpop", "dance-pop", "radio"}), _DEFAULT),
)

_FASTER = frozenset(
    {"upbeat", "energetic", "fast", "happy", "party", "driving", "uplifting", "hype", "bouncy"}
)
_SLOWER = frozenset(
    {"chill", "calm", "slow", "relaxing", "relaxed", "sleepy", "soft", "mellow", "dreamy", "lazy"}
)
_MAJOR = frozenset({"happy", "bright", "sunny", "joyful", "uplifting", "cheerful", "summer"})
_MINOR = frozenset(
    {"sad", "dark", "melancholy", "melancholic", "moody", "night", "rainy", "lonely"}
)


def split_tags(value: str | list[str] | None) -> list[str]:
    """Tags as a list: a string splits on commas, or on spaces when it has none."""
    if value is None:
        return []
    parts = value if isinstance(value, list) else re.split(r"," if "," in value else r"\s+", value)
    return [part.strip() for part in parts if part.strip()]


def words(text: str) -> list[str]:
    return [word.lower() for word in _WORD.findall(text)]


def style_for(prompt: str, tags: list[str]) -> Style:
    """The style a prompt and its tags ask for."""
    tag_words = [word for tag in tags for word in words(tag)] + [tag.lower() for tag in tags]
    prompt_words = words(prompt)
    everything = set(tag_words) | set(prompt_words)
    style = _DEFAULT
    for vocabulary in (tag_words, prompt_words):
        match = next((s for names, s in _GENRES if any(word in names for word in vocabulary)), None)
        if match is not None:
            style = match
            break
    lo, hi = style.bpm
    brightness = style.brightness
    if everything & _FASTER:
        lo, hi, brightness = lo + 14, hi + 16, brightness + 0.15
    if everything & _SLOWER:
        lo, hi, brightness = lo - 8, hi - 10, brightness - 0.15
    minor = style.minor
    if everything & _MAJOR:
        minor = 0.1
    if everything & _MINOR:
        minor = 0.9
    text = " ".join([prompt, *tags])
    fixed_bpm = None
    if found := _BPM.search(text):
        fixed_bpm = min(MAX_BPM, max(MIN_BPM, int(found.group(1))))
    fixed_root = fixed_mode = None
    if found := _KEY.search(text):
        letter, accidental, quality = found.groups()
        shift = {"#": 1, "♯": 1, "b": -1, "♭": -1}.get(accidental, 0)
        fixed_root = (_PITCH_CLASS[letter] + shift) % 12
        fixed_mode = "minor" if quality.startswith("min") else "major"
    return replace(
        style,
        bpm=(max(MIN_BPM, lo), min(MAX_BPM, max(lo, hi))),
        minor=minor,
        brightness=min(1.0, max(0.0, brightness)),
        fixed_bpm=fixed_bpm,
        fixed_root=fixed_root,
        fixed_mode=fixed_mode,
    )


_FILLER = frozenset(
    {
        "a", "an", "the", "make", "create", "generate", "compose", "write", "produce", "me",
        "please", "song", "track", "tune", "piece", "music", "some", "about", "of", "with",
    }
)  # fmt: skip
# Left in lower case inside a title.
_MINOR_WORDS = frozenset(
    {"a", "an", "the", "and", "or", "of", "in", "on", "at", "to", "for", "by", "with", "about",
     "à", "de", "la", "le", "et"}
)  # fmt: skip
MAX_TITLE_CHARS = 60


def title_for(prompt: str, tags: list[str]) -> str:
    """A title from the prompt's first phrase, without the request's filler words
    ("Make a song about rainy nights" → "Rainy Nights")."""
    phrase = re.split(r"[.,;:!?\n()\[\]]", prompt.strip(), maxsplit=1)[0]
    kept = phrase.split()
    while kept and kept[0].lower() in _FILLER:
        kept.pop(0)
    while kept and kept[-1].lower() in _FILLER:
        kept.pop()
    if not kept:
        kept = list(tags[:3])
    title = " ".join(
        word if i and word.lower() in _MINOR_WORDS else word[:1].upper() + word[1:]
        for i, word in enumerate(kept[:7])
    )
    title = title or "Untitled"
    if len(title) > MAX_TITLE_CHARS:
        title = title[:MAX_TITLE_CHARS].rsplit(" ", 1)[0].rstrip() or title[:MAX_TITLE_CHARS]
    return title


def key_name(root: int) -> str:
    return NOTE_NAMES[root % 12]
