"""The music workflow's parts, without a server: words to style, composition,
block rendering, MP3 encoding and cover art, judged by decoding what they make."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taskgate.workflows.builtin.media.compose import SAMPLE_RATE, Score, compose
from taskgate.workflows.builtin.media.cover import COVER_SIZE, draw_cover, save_png
from taskgate.workflows.builtin.media.style import split_tags, style_for, title_for
from taskgate.workflows.builtin.media.synth import CEILING, Renderer
from taskgate.workflows.builtin.music import render_mp3
from tests.media.analysis import (
    Decoded,
    band_energy,
    chroma,
    decode,
    scale_classes,
    tempo,
)

SECONDS = 10.0


@dataclass(frozen=True)
class Track:
    score: Score
    path: Path
    audio: Decoded


def make_track(directory: Path, prompt: str, tags: str, seed: int, seconds: float) -> Track:
    tag_list = split_tags(tags)
    score = compose(
        style_for(prompt, tag_list), seed=seed, seconds=seconds, words=(prompt, *tag_list)
    )
    path = directory / f"{prompt.replace(' ', '-')}-{seed}-{seconds}.mp3"
    render_mp3(score, path, title=title_for(prompt, tag_list))
    return Track(score, path, decode(path))


@pytest.fixture(scope="module")
def tracks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Track]:
    directory = tmp_path_factory.mktemp("music")
    return {
        "lofi": make_track(directory, "lofi chill beats to study to", "lofi, chill", 3, SECONDS),
        "pop": make_track(directory, "upbeat pop for a summer road trip", "upbeat pop", 3, SECONDS),
        "plain": make_track(directory, "a song", "", 5, SECONDS),
    }


# -- words to style -------------------------------------------------------------------


def test_tags_split_on_commas_or_spaces() -> None:
    assert split_tags("lofi, chill hop ,jazz") == ["lofi", "chill hop", "jazz"]
    assert split_tags("lofi chill") == ["lofi", "chill"]
    assert split_tags([" a ", "", "b"]) == ["a", "b"]
    assert split_tags(None) == split_tags("  ") == []


def test_lofi_chill_is_slower_and_darker_than_upbeat_pop() -> None:
    lofi = style_for("beats to relax to", ["lofi", "chill"])
    pop = style_for("a summer hit", ["upbeat", "pop"])
    assert lofi.bpm[1] < pop.bpm[0]
    assert lofi.brightness < pop.brightness
    assert (lofi.name, pop.name) == ("lofi", "pop")
    # The tags win over the prompt's genre words.
    assert style_for("a rock song", ["lofi"]).name == "lofi"
    assert style_for("a rock song", []).name == "rock"


def test_an_explicit_tempo_and_key_win() -> None:
    style = style_for("sad piano in F# minor at 92 BPM", ["upbeat"])
    score = compose(style, seed=1, seconds=4, words=("x",))
    assert (score.bpm, score.key, score.mode) == (92, "F#", "minor")
    assert style_for("Bb major", []).fixed_root == 10
    assert style_for("a major hit", []).fixed_root is None  # lower-case "a" is no key
    assert style_for("999 bpm", []).fixed_bpm == 180


@pytest.mark.parametrize(
    ("prompt", "tags", "title"),
    [
        ("Make a song about rainy nights in Tokyo. Slow.", [], "Rainy Nights in Tokyo"),
        ("  neon dreams  ", [], "Neon Dreams"),
        ("a song", ["lofi", "jazz"], "Lofi Jazz"),
        ("!!!", [], "Untitled"),
        ("upbeat pop about a summer road trip", [], "Upbeat Pop about a Summer Road Trip"),
        ("Été à Paris, doux", [], "Été à Paris"),
    ],
)
def test_title_from_the_prompt(prompt: str, tags: list[str], title: str) -> None:
    assert title_for(prompt, tags) == title


def test_a_long_prompt_gives_a_short_title() -> None:
    title = title_for("word " * 50 + "end", [])
    assert 0 < len(title) <= 60


# -- rendering -------------------------------------------------------------------------


def test_blocks_of_any_size_render_the_same_samples() -> None:
    score = compose(style_for("jazz", ["jazz"]), seed=11, seconds=3.0, words=("jazz",))
    whole = Renderer(score).render(0, score.samples)
    renderer = Renderer(score)
    pieces = [renderer.render(a, a + 7_919) for a in range(0, score.samples, 7_919)]
    assert np.allclose(np.concatenate(pieces, axis=1), whole, atol=1e-6)
    assert whole.shape == (2, round(3.0 * SAMPLE_RATE)) and whole.dtype == np.float32


def test_the_limiter_keeps_every_sample_under_the_ceiling() -> None:
    style = style_for("loud rock", ["rock", "upbeat"])
    score = compose(style, seed=2, seconds=4.0, words=("loud",))
    samples = Renderer(score).render(0, score.samples)
    assert float(np.abs(samples).max()) < CEILING
    assert float(np.abs(samples).max()) > 0.2  # and it is not silent either


def test_a_sung_line_only_when_not_instrumental() -> None:
    style = style_for("a ballad", ["piano"])
    plain = compose(style, seed=4, seconds=8, instrumental=True, words=("a",))
    sung = compose(style, seed=4, seconds=8, instrumental=False, words=("a",))
    assert not any(note.voice == "voice" for note in plain.notes)
    assert any(note.voice == "voice" for note in sung.notes)


# -- music that is music ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["lofi", "pop", "plain"])
def test_mp3_is_44k_stereo_192k_of_the_asked_length(tracks: dict[str, Track], name: str) -> None:
    audio = tracks[name].audio
    assert (audio.codec, audio.sample_rate, audio.samples.shape[0]) == ("mp3float", 44100, 2)
    assert audio.bit_rate == 192_000
    assert abs(audio.seconds - SECONDS) <= 0.1


@pytest.mark.parametrize("name", ["lofi", "pop", "plain"])
def test_the_onsets_beat_at_the_reported_tempo(tracks: dict[str, Track], name: str) -> None:
    track = tracks[name]
    detected = tempo(track.audio)
    assert abs(detected - track.score.bpm) <= 0.05 * track.score.bpm, (detected, track.score.bpm)


@pytest.mark.parametrize("name", ["lofi", "pop", "plain"])
def test_the_strongest_pitch_classes_are_in_the_reported_key(
    tracks: dict[str, Track], name: str
) -> None:
    score = tracks[name].score
    energy = chroma(tracks[name].audio)
    strongest = set(np.argsort(energy)[::-1][:5].tolist())
    assert strongest <= scale_classes(score.key, score.mode), (score.key, score.mode, energy)


@pytest.mark.parametrize("name", ["lofi", "pop", "plain"])
def test_low_and_mid_bands_carry_energy_and_nothing_clips(
    tracks: dict[str, Track], name: str
) -> None:
    audio = tracks[name].audio
    assert band_energy(audio, 30, 250) > 0.05
    assert band_energy(audio, 250, 4000) > 0.05
    peak = float(np.abs(audio.samples).max())
    assert 0.2 < peak < 0.9, peak
    rms = float(np.sqrt(np.mean(audio.samples**2)))
    assert rms > 0.03, rms


def test_lofi_chill_comes_out_slower_than_upbeat_pop(tracks: dict[str, Track]) -> None:
    assert tracks["lofi"].score.bpm < tracks["pop"].score.bpm
    assert tempo(tracks["lofi"].audio) < tempo(tracks["pop"].audio)


def test_one_seed_repeats_exactly_and_two_seeds_differ(
    tracks: dict[str, Track], tmp_path: Path
) -> None:
    again = make_track(tmp_path, "a song", "", 5, SECONDS)
    assert again.path.read_bytes() == tracks["plain"].path.read_bytes()
    other = make_track(tmp_path, "a song", "", 6, SECONDS)
    assert other.path.read_bytes() != tracks["plain"].path.read_bytes()
    assert other.score.notes != tracks["plain"].score.notes


# -- covers ----------------------------------------------------------------------------


def test_covers_are_1024_square_pngs_that_follow_the_seed_and_words(tmp_path: Path) -> None:
    paths = {}
    for name, seed, words in [
        ("a", 1, ("rainy night",)),
        ("a2", 1, ("rainy night",)),
        ("b", 1, ("sunny morning",)),
        ("c", 2, ("rainy night",)),
    ]:
        paths[name] = tmp_path / f"{name}.png"
        save_png(draw_cover(seed, words, minor=True, brightness=0.5), paths[name])
    with Image.open(paths["a"]) as image:
        assert (image.format, image.size, image.mode) == ("PNG", (COVER_SIZE, COVER_SIZE), "RGB")
        pixels = np.asarray(image, dtype=np.float32)
    assert pixels.std() > 10  # not a flat colour
    assert paths["a"].read_bytes() == paths["a2"].read_bytes()
    assert paths["a"].read_bytes() != paths["b"].read_bytes()
    assert paths["a"].read_bytes() != paths["c"].read_bytes()
    with Image.open(paths["b"]) as other:
        difference = np.abs(pixels - np.asarray(other, dtype=np.float32)).mean()
    assert difference > 10, difference
