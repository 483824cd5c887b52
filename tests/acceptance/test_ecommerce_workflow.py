"""The ``ecommerce-video`` workflow end to end: solid-colour product images uploaded
over HTTP, the promo and thumbnail fetched through their signed links and decoded
frame by frame (text drawn where it belongs, the brand colour on the end card,
the soundtrack as long as the video); cancellation mid-render; bad inputs refused
before anything is written or charged."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray
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
from tests.media.video import decode_video, measure_frames

pytestmark = pytest.mark.acceptance

FPS = 24
BLUE, RED = (30, 60, 220), (220, 30, 30)
GREEN_HEX, GREEN = "#00c060", (0, 192, 96)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, backend)


@pytest.fixture(scope="module")
def acct(srv: ServerProcess) -> Account:
    return quick_account(srv.data_dir, "promo", credits="50")


@pytest.fixture
def http(srv: ServerProcess, acct: Account) -> Iterator[httpx.Client]:
    with srv.client(acct.key) as client:
        yield client


def solid(colour: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def pictures(srv: ServerProcess, acct: Account) -> dict[str, str]:
    """A landscape blue and a portrait red product, by colour name."""
    with srv.client(acct.key) as http:
        return {
            "blue": upload(http, solid(BLUE, (400, 300)), "blue.png"),
            "red": upload(http, solid(RED, (300, 500)), "red.png"),
        }


def fetch(item: dict[str, Any], to: Path) -> Path:
    """An output file through its signed link (no API key)."""
    response = httpx.get(item["url"], timeout=30)
    assert response.status_code == 200, response.text
    to.write_bytes(response.content)
    return to


def white_in_title_band(rgb: NDArray[np.uint8]) -> float:
    """The share of near-white pixels where the title stands (top fifth): the
    products are solid blue and red, so only drawn text is white there."""
    band = rgb[: rgb.shape[0] // 5]
    return float((band.min(axis=2) > 200).mean())


def near(colour: tuple[int, int, int], within: float = 40) -> Callable[[NDArray[np.uint8]], float]:
    """The share of a frame's pixels within ``within`` of ``colour``."""

    def share(rgb: NDArray[np.uint8]) -> float:
        distance = np.linalg.norm(rgb.astype(np.float32) - np.array(colour, np.float32), axis=2)
        return float((distance < within).mean())

    return share


def changed(rgb: NDArray[np.uint8]) -> float:
    return float(rgb.astype(np.float32).mean())


def test_a_promo_with_text_coming_in_and_a_brand_coloured_end_card(
    http: httpx.Client, pictures: dict[str, str], tmp_path: Path
) -> None:
    body = {
        "product_images": [pictures["blue"], pictures["red"]],
        "title": "Trail Runner",
        "price": "€89",
        "bullet_points": ["Light as air", "Waterproof — really"],
        "call_to_action": "Shop now",
        "brand_color": GREEN_HEX,
        "resolution": "360p",
        "duration": 4,
    }
    task = submit(http, "ecommerce-video", input=body)
    assert Decimal(task["billing"]["reserved_credits"]) == Decimal("0.100")
    done = wait_status(http, task["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed", done.get("error")
    [result] = done["output"]
    assert result["type"] == "ecommerce_video"
    assert (result["width"], result["height"], result["fps"]) == (360, 640, FPS)
    assert result["duration"] == 4.0 and result["audio"] is False
    video, thumbnail = result["video"], result["thumbnail"]
    assert (video["type"], video["content_type"]) == ("video", "video/mp4")
    assert (thumbnail["type"], thumbnail["content_type"]) == ("image", "image/jpeg")

    path = fetch(video, tmp_path / "promo.mp4")
    seen = decode_video(path)
    assert (seen.codec, seen.pix_fmt, seen.width, seen.height) == ("h264", "yuv420p", 360, 640)
    assert abs(seen.seconds - 4.0) <= 0.1, seen.frames
    # Not static: the picture moves from frame to frame.
    assert float(np.abs(np.diff(seen.centres, axis=0)).max()) > 3

    # The title is not there at the start, then stands in white at the top.
    white = measure_frames(path, white_in_title_band)
    assert white[0] < 0.001, white[:3]
    assert min(white[FPS : 2 * FPS]) > 0.01, white[FPS : 2 * FPS]
    # The brand colour: none at the start (blue product, no badge yet); the price
    # badge in it once the price is in; the end card's button and accents at the end.
    green = measure_frames(path, near(GREEN))
    assert green[0] < 0.0005, green[0]
    assert green[2 * FPS] > 0.002, green[2 * FPS]
    assert min(green[-FPS // 2 :]) > 0.01, green[-FPS // 2 :]
    # The end card is its own picture: neither product's colour fills its middle.
    end = seen.centres[-1]
    assert float(np.linalg.norm(end - np.array(BLUE))) > 60, end
    assert float(np.linalg.norm(end - np.array(RED))) > 60, end

    with Image.open(fetch(thumbnail, tmp_path / "thumbnail.jpg")) as shot:
        assert (shot.format, shot.size) == ("JPEG", (360, 640))
        assert white_in_title_band(np.asarray(shot.convert("RGB"))) > 0.01

    usage = done["usage"]
    assert (usage["video_seconds"], usage["image_count"]) == (4, 2)
    assert "audio_seconds" not in usage
    assert Decimal(usage["credits"]) == Decimal("0.100")  # 4 × 0.02 + 2 × 0.01
    assert done["progress"]["percent"] == 100.0


def test_a_unicode_title_with_composed_music(
    http: httpx.Client, pictures: dict[str, str], tmp_path: Path
) -> None:
    body = {
        "product_images": [pictures["red"]],
        "title": "Café — €89",
        "aspect": "1:1",
        "resolution": "360p",
        "duration": 3,
        "music": {"generate": {"prompt": "upbeat pop", "seed": 3}},
    }
    task = submit(http, "ecommerce-video", input=body)
    done = wait_status(http, task["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed", done.get("error")
    path = fetch(done["output"][0]["video"], tmp_path / "promo.mp4")
    seen = decode_video(path)
    assert (seen.width, seen.height) == (360, 360)
    assert abs(seen.seconds - 3.0) <= 0.1, seen.frames
    white = measure_frames(path, white_in_title_band)
    assert max(white[: 2 * FPS]) > 0.01
    audio = decode(path)
    assert (audio.codec, audio.sample_rate) == ("aac", 44100)
    assert abs(audio.seconds - seen.seconds) <= 0.1, (audio.seconds, seen.seconds)
    assert float(np.sqrt(np.mean(audio.samples**2))) > 0.02  # not silent
    usage = done["usage"]
    assert (usage["video_seconds"], usage["image_count"], usage["audio_seconds"]) == (3, 1, 3)
    assert Decimal(usage["credits"]) == Decimal("0.130")  # 3 × 0.02 + 0.01 + 3 × 0.02


def test_an_uploaded_soundtrack_is_looped_to_the_video(
    http: httpx.Client, pictures: dict[str, str], tmp_path: Path
) -> None:
    sound = upload(http, filesamples.audio("wav", seconds=0.5), "tone.wav")
    body = {
        "product_images": [pictures["blue"], pictures["red"]],
        "title": "Two products",
        "aspect": "16:9",
        "resolution": "360p",
        "duration": 3,
        "music": {"file_id": sound},
    }
    task = submit(http, "ecommerce-video", input=body)
    done = wait_status(http, task["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed", done.get("error")
    path = fetch(done["output"][0]["video"], tmp_path / "promo.mp4")
    seen = decode_video(path)
    assert (seen.width, seen.height) == (640, 360)
    audio = decode(path)
    assert abs(audio.seconds - 3.0) <= 0.1 and abs(seen.seconds - 3.0) <= 0.1
    middle = audio.samples[:, audio.sample_rate : 2 * audio.sample_rate]
    assert float(np.sqrt(np.mean(middle**2))) > 0.05  # the half-second tone loops
    assert "audio_seconds" not in done["usage"]


def test_cancel_mid_render_stops_within_two_seconds_leaving_no_file(
    srv: ServerProcess, http: httpx.Client, pictures: dict[str, str]
) -> None:
    body = {
        "product_images": [pictures["blue"], pictures["red"]] * 5,
        "title": "Long promo",
        "resolution": "360p",
        "duration": 60,
    }
    task = submit(http, "ecommerce-video", input=body)

    done = cancel_while_rendering(http, srv.data_dir, task["id"], past_percent=4)
    assert done["progress"]["percent"] < 100
    assert done["billing"]["charged_credits"] == "0"


def test_the_catalogue_shows_the_bounds(http: httpx.Client) -> None:
    found = json_of(http.get("/v1/workflows/ecommerce-video"), 200)
    schema = found["input_schema"]
    images = schema["properties"]["product_images"]
    assert (images["minItems"], images["maxItems"]) == (1, 10)
    assert images["items"]["contentMediaType"] == "image/*"
    duration = schema["properties"]["duration"]
    assert (duration["minimum"], duration["maximum"], duration["default"]) == (3, 60, 15)
    assert schema["properties"]["aspect"]["default"] == "9:16"
    assert sorted(schema["required"]) == ["product_images", "title"]


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
        "no-images": ({"product_images": []}, "input.product_images"),
        "too-many-images": ({"product_images": [image] * 11}, "input.product_images"),
        "foreign-image": ({"product_images": [image, others["foreign"]]}, "input.product_images.1"),
        "audio-as-image": ({"product_images": [image, audio]}, "input.product_images.1"),
        "not-a-ref": ({"product_images": ["shoe.png"]}, "input.product_images.0"),
        "no-title": ({"title": None}, "input.title"),
        "empty-title": ({"title": ""}, "input.title"),
        "blank-title": ({"title": "   "}, "input.title"),
        "title-too-long": ({"title": "x" * 81}, "input.title"),
        "price-too-long": ({"price": "€" + "9" * 24}, "input.price"),
        "too-many-bullets": ({"bullet_points": ["a"] * 6}, "input.bullet_points"),
        "blank-bullet": ({"bullet_points": ["fine", " "]}, "input.bullet_points.1"),
        "bullet-too-long": ({"bullet_points": ["x" * 81]}, "input.bullet_points.0"),
        "call-too-long": ({"call_to_action": "x" * 41}, "input.call_to_action"),
        "colour-name": ({"brand_color": "red"}, "input.brand_color"),
        "colour-short": ({"brand_color": "#12345"}, "input.brand_color"),
        "colour-not-hex": ({"brand_color": "#12345g"}, "input.brand_color"),
        "duration-short": ({"duration": 2}, "input.duration"),
        "duration-long": ({"duration": 61}, "input.duration"),
        "duration-fraction": ({"duration": 4.5}, "input.duration"),
        "aspect": ({"aspect": "4:3"}, "input.aspect"),
        "resolution": ({"resolution": "4k"}, "input.resolution"),
        "image-as-music": ({"music": {"file_id": image}}, "input.music.file_id"),
        "music-both": (
            {"music": {"file_id": audio, "generate": {"prompt": "x"}}},
            "input.music",
        ),
        "unknown-field": ({"fps": 60}, "input.fps"),
    }


NAMES = [
    "no-images",
    "too-many-images",
    "foreign-image",
    "audio-as-image",
    "not-a-ref",
    "no-title",
    "empty-title",
    "blank-title",
    "title-too-long",
    "price-too-long",
    "too-many-bullets",
    "blank-bullet",
    "bullet-too-long",
    "call-too-long",
    "colour-name",
    "colour-short",
    "colour-not-hex",
    "duration-short",
    "duration-long",
    "duration-fraction",
    "aspect",
    "resolution",
    "image-as-music",
    "music-both",
    "unknown-field",
]


def counts(srv: ServerProcess, account: Account) -> tuple[int, ...]:
    """The account's tasks, ledger entries and files."""
    return tuple(
        int(sql(srv.data_dir, f"SELECT count(*) FROM {t} WHERE account_id = ?", account.id)[0][0])
        for t in ("tasks", "ledger", "files")
    )


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_are_422_naming_the_field(
    srv: ServerProcess, acct: Account, http: httpx.Client, others: dict[str, str], name: str
) -> None:
    change, param = _bad(others)[name]
    body = {"product_images": [others["image"]], "title": "A product", "resolution": "360p"}
    body.update(change)
    body = {key: value for key, value in body.items() if value is not None}
    before = counts(srv, acct)
    balance = json_of(http.get("/v1/usage"), 200)["balance"]
    response = http.post("/v1/tasks", json={"workflow": "ecommerce-video", "input": body})
    assert_error(response, 422, "invalid_param", param)
    assert counts(srv, acct) == before
    assert json_of(http.get("/v1/usage"), 200)["balance"] == balance
