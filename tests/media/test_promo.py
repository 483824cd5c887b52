"""The parts of the promo: text that wraps and is cut with an ellipsis, a font
that has the glyphs of prices and names, layers laid over frames at any offset,
images shown whole, and the end card's place in the timeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taskgate.workflows.builtin.media.layers import layer_of, planes, rgb_to_yuv
from taskgate.workflows.builtin.media.promo import Promo, PromoText, parse_colour, wrap
from taskgate.workflows.builtin.media.slides import font, load_image

FPS = 24


def test_wrap_breaks_at_spaces_and_inside_long_words_and_ends_with_an_ellipsis() -> None:
    face = font(20)
    lines = wrap("Lightweight trail running shoe for every season", face, 200, 3)
    assert len(lines) >= 2 and all(face.getlength(line) <= 200 for line in lines)
    assert " ".join(lines) == "Lightweight trail running shoe for every season"
    long = wrap("x" * 200, face, 100, 2)
    assert len(long) == 2 and long[-1].endswith("…")
    assert all(face.getlength(line) <= 100 for line in long)


@pytest.mark.parametrize("char", ["é", "€", "—", "ü", "£", "→"])
def test_the_bundled_font_draws_the_glyph_not_a_box(char: str) -> None:
    face = font(40)
    missing = np.asarray(face.getmask("\uffff"))
    drawn = np.asarray(face.getmask(char))
    assert drawn.size > 0 and drawn.any()
    assert drawn.shape != missing.shape or not np.array_equal(drawn, missing)


def test_a_layer_is_cut_at_the_frame_edges_and_keeps_its_colour() -> None:
    width, height = 64, 48
    frame = rgb_to_yuv(np.zeros((height, width, 3), dtype=np.uint8))
    square = layer_of(Image.new("RGBA", (20, 20), (255, 255, 255, 255)), 50, 40)
    square.draw(frame, width, height)  # overhangs the right and bottom edges
    square.draw(frame, width, height, dx=-200)  # wholly outside: nothing
    y, u, v = planes(frame, width, height)
    assert y[40:, 50:].min() > 230 and y[:40].max() < 20 and y[:, :50].max() < 20
    assert abs(int(u[20:, 25:].mean()) - 128) < 3 and abs(int(v[20:, 25:].mean()) - 128) < 3
    faded = rgb_to_yuv(np.zeros((height, width, 3), dtype=np.uint8))
    layer_of(Image.new("RGBA", (20, 20), (255, 255, 255, 255)), 10, 10).draw(
        faded, width, height, weight=0.5
    )
    middle = int(planes(faded, width, height)[0][20, 20])
    assert 100 < middle < 160


def test_contain_shows_the_whole_image_over_a_darker_backdrop(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    picture = Image.new("RGB", (400, 100), (200, 40, 40))
    picture.paste((40, 200, 40), (0, 0, 20, 100))  # a green strip at the far left
    picture.save(path)
    shown = load_image(path, 180, 320, fit="contain")
    assert shown.shape == (320, 180, 3)
    middle_row = shown[160]
    assert middle_row[2][1] > 150  # the green strip is in the picture
    assert shown[10].max() < 120  # above the image: the dimmed, blurred copy
    covered = load_image(path, 180, 320)
    assert covered[160][2][1] < 100  # cover crops the strip away


@pytest.mark.parametrize(("seconds", "end"), [(3, 1.0), (10, 2.0), (15, 3.0), (60, 3.0)])
def test_the_end_card_takes_the_last_seconds(tmp_path: Path, seconds: int, end: float) -> None:
    path = tmp_path / "p.png"
    Image.new("RGB", (64, 64), (30, 60, 220)).save(path)
    text = PromoText("Name", "€5", ["one"], "Buy", parse_colour("#00c060"))
    promo = Promo([path], text, width=180, height=320, frames=seconds * FPS, fps=FPS)
    assert promo.end_frames == round(end * FPS)
    assert promo.body_frames + promo.end_frames == seconds * FPS
    assert 0 < promo.thumbnail_at < promo.body_frames - promo.fade_frames
    last = promo.frame(seconds * FPS - 1).to_ndarray(format="rgb24")
    green = np.linalg.norm(last.astype(float) - np.array([0, 192, 96]), axis=2) < 40
    assert green.mean() > 0.005
