"""The ``slideshow`` workflow end to end: solid-colour images uploaded over HTTP,
the MP4 and thumbnail fetched through their signed links and decoded frame by
frame; cancellation mid-render; bad inputs refused before anything is charged."""

from __future__ import annotations

import io
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests import filesamples
from tests.acceptance.apitools import (
    Account,
    assert_error,
    cancel_while_rendering,
    json_of,
    module_server,
    quick_account,
    sql,
    submit,
    upload,
    wait_status,
)
from tests.databases import Backend
from tests.helpers import ServerProcess
from tests.media.analysis import decode
from tests.media.video import decode_video, top_level_boxes

pytestmark = pytest.mark.acceptance

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220)}
FPS = 24


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, backend)


@pytest.fixture(scope="module")
def acct(srv: ServerProcess) -> Account:
    return quick_account(srv.data_dir, "slides", credits="50")


@pytest.fixture
def http(srv: ServerProcess, acct: Account) -> Iterator[httpx.Client]:
    with srv.client(acct.key) as client:
        yield client


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (400, 300)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def pictures(srv: ServerProcess, acct: Account) -> dict[str, str]:
    """The solid-colour images (one portrait, to be cropped), by colour name."""
    with srv.client(acct.key) as http:
        return {
            name: upload(http, solid(rgb, (300, 500) if name == "green" else (400, 300)), name)
            for name, rgb in COLOURS.items()
        }


def fetch(item: dict[str, Any], to: Path) -> Path:
    """An output file through its signed link (no API key)."""
    response = httpx.get(item["url"], timeout=30)
    assert response.status_code == 200, response.text
    to.write_bytes(response.content)
    return to


def nearest(rgb: np.ndarray[Any, Any]) -> str:
    return min(COLOURS, key=lambda name: float(np.linalg.norm(rgb - np.array(COLOURS[name]))))


def assert_slots(centres: np.ndarray[Any, Any], order: list[str], per_slot: int) -> None:
    """The middle of each slot shows its image's colour, and nothing else."""
    for slot, name in enumerate(order):
        middle = centres[slot * per_slot + per_slot // 2]
        assert nearest(middle) == name, (slot, middle)
        assert float(np.abs(middle - np.array(COLOURS[name])).max()) < 12, (slot, middle)


def test_colours_in_order_with_composed_music(
    http: httpx.Client, pictures: dict[str, str], tmp_path: Path
) -> None:
    order = ["red", "green", "blue"]
    body = {
        "images": [pictures[name] for name in order],
        "seconds_per_image": 1,
        "aspect": "9:16",
        "resolution": "360p",
        "music": {"generate": {"prompt": "upbeat pop", "seed": 5}},
        "captions": ["Café — €5", None, ""],
    }
    task = submit(http, "slideshow", input=body)
    assert Decimal(task["billing"]["reserved_credits"]) == Decimal("0.120")
    done = wait_status(http, task["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed", done.get("error")
    [result] = done["output"]
    assert result["type"] == "slideshow"
    assert (result["width"], result["height"], result["fps"]) == (360, 640, FPS)
    assert result["duration"] == 3.0 and result["audio"] is True
    video, thumbnail = result["video"], result["thumbnail"]
    assert (video["type"], video["content_type"]) == ("video", "video/mp4")
    assert (video["width"], video["height"]) == (360, 640)
    assert (thumbnail["type"], thumbnail["content_type"]) == ("image", "image/jpeg")

    path = fetch(video, tmp_path / "slideshow.mp4")
    seen = decode_video(path)
    assert (seen.codec, seen.pix_fmt, seen.width, seen.height) == ("h264", "yuv420p", 360, 640)
    assert abs(seen.seconds - 3.0) <= 0.1, seen.frames
    assert_slots(seen.centres, order, FPS)
    # The crossfade takes the last quarter second of a slot: midway, red and green mix.
    mixed = seen.centres[FPS - 3]
    assert nearest(mixed) in {"red", "green"} and 60 < mixed[0] < 190 and 60 < mixed[1] < 180
    # faststart: the index comes before the media data.
    boxes = top_level_boxes(path)
    assert boxes.index("moov") < boxes.index("mdat"), boxes
    audio = decode(path)
    assert (audio.codec, audio.sample_rate, audio.samples.shape[0]) == ("aac", 44100, 2)
    assert abs(audio.seconds - 3.0) <= 0.1
    assert float(np.sqrt(np.mean(audio.samples**2))) > 0.02  # not silent
    # Faded out: the last 50 ms are far quieter than the middle.
    tail = audio.samples[:, -2205:]
    assert float(np.abs(tail).max()) < float(np.abs(audio.samples).max()) / 4

    with Image.open(fetch(thumbnail, tmp_path / "thumbnail.jpg")) as shot:
        assert (shot.format, shot.size) == ("JPEG", (360, 640))
        assert nearest(np.asarray(shot.convert("RGB"))[320, 180].astype(float)) == "red"

    usage = done["usage"]
    assert (usage["video_seconds"], usage["image_count"], usage["audio_seconds"]) == (3, 3, 3)
    assert Decimal(usage["credits"]) == Decimal("0.120")  # 3 × 0.01 + 3 × 0.01 + 3 × 0.02
    assert done["progress"]["percent"] == 100.0


def test_slide_transition_stills_and_a_looped_audio_file(
    http: httpx.Client, pictures: dict[str, str], tmp_path: Path
) -> None:
    sound = upload(http, filesamples.audio("wav", seconds=0.5), "tone.wav")
    order = ["blue", "red"]
    body = {
        "images": [pictures[name] for name in order],
        "seconds_per_image": 1,
        "transition": "slide",
        "ken_burns": False,
        "aspect": "1:1",
        "resolution": "360p",
        "music": {"file_id": sound},
    }
    task = submit(http, "slideshow", input=body)
    done = wait_status(http, task["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed", done.get("error")
    path = fetch(done["output"][0]["video"], tmp_path / "slides.mp4")
    seen = decode_video(path)
    assert (seen.width, seen.height) == (360, 360)
    assert abs(seen.seconds - 2.0) <= 0.1
    assert_slots(seen.centres, order, FPS)
    # The slide takes the last quarter second of a slot: midway, the left of the
    # frame is still blue and the right already red.
    midway = FPS - 3
    assert (nearest(seen.lefts[midway]), nearest(seen.rights[midway])) == ("blue", "red")
    audio = decode(path)
    assert abs(audio.seconds - 2.0) <= 0.1
    # The half-second tone loops: the second second sounds as well as the first.
    rate = audio.sample_rate
    for start in (0.1, 1.0):
        chunk = audio.samples[:, int(start * rate) : int((start + 0.5) * rate)]
        assert float(np.sqrt(np.mean(chunk**2))) > 0.05, start
    assert done["usage"]["video_seconds"] == 2
    assert "audio_seconds" not in done["usage"]


def test_cancel_mid_render_stops_within_two_seconds_leaving_no_file(
    srv: ServerProcess, http: httpx.Client, pictures: dict[str, str]
) -> None:
    body = {
        "images": list(pictures.values()) * 4,
        "seconds_per_image": 20,
        "resolution": "360p",
    }
    task = submit(http, "slideshow", input=body)

    done = cancel_while_rendering(http, srv.data_dir, task["id"], past_percent=4)
    assert done["progress"]["percent"] < 100
    assert done["billing"]["charged_credits"] == "0"


def test_the_catalogue_marks_image_and_audio_fields(http: httpx.Client) -> None:
    found = json_of(http.get("/v1/workflows/slideshow"), 200)
    schema = found["input_schema"] if "input_schema" in found else found["input"]
    images = schema["properties"]["images"]
    assert (images["minItems"], images["maxItems"]) == (1, 50)
    assert images["items"]["contentMediaType"] == "image/*"
    assert schema["required"] == ["images"]


# -- bad inputs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def others(srv: ServerProcess, acct: Account) -> dict[str, str]:
    """A stranger's image, and this account's audio and image files."""
    stranger = quick_account(srv.data_dir, "stranger")
    with srv.client(stranger.key) as http:
        foreign = upload(http, filesamples.image("png"), "theirs.png")
    with srv.client(acct.key) as http:
        sound = upload(http, filesamples.audio("wav", seconds=0.3), "tone.wav")
        picture = upload(http, filesamples.image("png"), "mine.png")
    return {"foreign": foreign, "audio": sound, "image": picture}


def _bad(others: dict[str, str]) -> dict[str, tuple[dict[str, Any], str]]:
    image, audio = others["image"], others["audio"]
    return {
        "too-many-images": ({"images": [image] * 51}, "input.images"),
        "no-images": ({"images": []}, "input.images"),
        "images-not-a-list": ({"images": image}, "input.images"),
        "foreign-image": ({"images": [image, others["foreign"]]}, "input.images.1"),
        "unknown-image": ({"images": ["file_01J0000000000000000000000Z"]}, "input.images.0"),
        "audio-as-image": ({"images": [image, audio]}, "input.images.1"),
        "not-a-ref": ({"images": ["cat.png"]}, "input.images.0"),
        "image-as-music": ({"music": {"file_id": image}}, "input.music.file_id"),
        "music-empty": ({"music": {}}, "input.music"),
        "music-both": (
            {"music": {"file_id": audio, "generate": {"prompt": "x"}}},
            "input.music",
        ),
        "music-too-short": (
            {"music": {"generate": {"prompt": "x", "duration": 1}}},
            "input.music.generate.duration",
        ),
        "music-blank-prompt": (
            {"music": {"generate": {"prompt": " "}}},
            "input.music.generate.prompt",
        ),
        "seconds-zero": ({"seconds_per_image": 0}, "input.seconds_per_image"),
        "seconds-too-many": ({"seconds_per_image": 21}, "input.seconds_per_image"),
        "seconds-fraction": ({"seconds_per_image": 2.5}, "input.seconds_per_image"),
        "transition": ({"transition": "wipe"}, "input.transition"),
        "aspect": ({"aspect": "4:3"}, "input.aspect"),
        "resolution": ({"resolution": "4k"}, "input.resolution"),
        "ken-burns": ({"ken_burns": "maybe"}, "input.ken_burns"),
        "too-many-captions": ({"captions": ["a", "b"]}, "input.captions"),
        "caption-too-long": ({"captions": ["x" * 201]}, "input.captions.0"),
        "unknown-field": ({"fps": 60}, "input.fps"),
    }


def counts(srv: ServerProcess, account: Account) -> tuple[int, ...]:
    """The account's tasks, ledger entries and files."""
    return tuple(
        int(
            sql(srv.data_dir, f"SELECT count(*) FROM {table} WHERE account_id = ?", account.id)[0][
                0
            ]
        )
        for table in ("tasks", "ledger", "files")
    )


@pytest.mark.parametrize(
    "name",
    [
        "too-many-images",
        "no-images",
        "images-not-a-list",
        "foreign-image",
        "unknown-image",
        "audio-as-image",
        "not-a-ref",
        "image-as-music",
        "music-empty",
        "music-both",
        "music-too-short",
        "music-blank-prompt",
        "seconds-zero",
        "seconds-too-many",
        "seconds-fraction",
        "transition",
        "aspect",
        "resolution",
        "ken-burns",
        "too-many-captions",
        "caption-too-long",
        "unknown-field",
    ],
)
def test_bad_inputs_are_422_naming_the_field(
    srv: ServerProcess, acct: Account, http: httpx.Client, others: dict[str, str], name: str
) -> None:
    change, param = _bad(others)[name]
    body = {"images": [others["image"]], "resolution": "360p", **change}
    before = counts(srv, acct)
    balance = json_of(http.get("/v1/usage"), 200)["balance"]
    response = http.post("/v1/tasks", json={"workflow": "slideshow", "input": body})
    assert_error(response, 422, "invalid_param", param)
    assert counts(srv, acct) == before
    assert json_of(http.get("/v1/usage"), 200)["balance"] == balance
