"""The ``music`` workflow end to end: submitted over HTTP to a real server, its
MP3s and covers fetched and decoded; cancellation mid-render; bad inputs."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.acceptance.apitools import (
    assert_error,
    cancel_while_rendering,
    json_of,
    module_server,
    submit,
    wait_status,
)
from tests.databases import Backend
from tests.helpers import ServerProcess
from tests.media.analysis import decode

pytestmark = pytest.mark.acceptance


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, backend)


@pytest.fixture
def http(srv: ServerProcess) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client


def fetch(item: dict[str, Any], to: Path) -> Path:
    """An output file's bytes, fetched through its signed link (no API key) and
    saved to ``to``."""
    response = httpx.get(item["url"], timeout=30)
    assert response.status_code == 200, response.text
    to.write_bytes(response.content)
    return to


def test_two_tracks_with_covers(http: httpx.Client, tmp_path: Path) -> None:
    body = {
        "prompt": "Upbeat pop about a summer road trip",
        "tags": ["upbeat", "pop"],
        "duration": 3,
        "seed": 42,
        "count": 2,
    }
    task = submit(http, "music", input=body)
    done = wait_status(http, task["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed", done.get("error")
    # The output is the two tracks, each holding its files with their links.
    tracks = done["output"]
    assert [t["type"] for t in tracks] == ["track", "track"]
    assert [t["audio"]["name"] for t in tracks] == ["track-1.mp3", "track-2.mp3"]
    assert [t["image"]["name"] for t in tracks] == ["cover-1.png", "cover-2.png"]
    assert {t["seed"] for t in tracks} == {42, 43}
    for track in tracks:
        assert track["title"] == "Upbeat Pop about a Summer Road Trip"
        assert track["tags"] == ["upbeat", "pop"]
        assert track["duration"] == 3.0
        assert track["mode"] in {"major", "minor"}
        assert 110 <= track["bpm"] <= 180
        entry, cover = track["audio"], track["image"]
        assert entry["file_id"].startswith("file_") and cover["file_id"].startswith("file_")
        assert (entry["type"], entry["content_type"]) == ("audio", "audio/mpeg")
        assert (cover["type"], cover["content_type"]) == ("image", "image/png")
        assert (cover["width"], cover["height"]) == (1024, 1024)
        assert abs(entry["duration"] - 3.0) <= 0.1
        for item in (entry, cover):
            assert item["expired"] is False and item["url_expires_at"] and item["expires_at"]
            described = json_of(http.get(f"/v1/files/{item['file_id']}"), 200)
            assert (described["task_id"], described["purpose"]) == (done["id"], "output")
        audio = decode(fetch(entry, tmp_path / entry["name"]))
        assert (audio.codec, audio.sample_rate, audio.samples.shape[0]) == ("mp3float", 44100, 2)
        assert abs(audio.seconds - 3.0) <= 0.1
        assert float(np.sqrt(np.mean(audio.samples**2))) > 0.03  # not silent
        with Image.open(fetch(cover, tmp_path / cover["name"])) as im:
            assert (im.format, im.size) == ("PNG", (1024, 1024))
    one, two = (tmp_path / "track-1.mp3").read_bytes(), (tmp_path / "track-2.mp3").read_bytes()
    assert one != two
    assert done["usage"]["audio_seconds"] == pytest.approx(6.0)
    assert Decimal(done["usage"]["credits"]) == Decimal("0.120")
    assert done["progress"]["percent"] == 100.0


def test_the_same_seed_gives_the_same_bytes_over_http(http: httpx.Client, tmp_path: Path) -> None:
    body = {"prompt": "lofi beats", "tags": "lofi chill", "duration": 2, "seed": 9}
    first, second = (submit(http, "music", input=body) for _ in range(2))
    paths = []
    for n, task in enumerate((first, second)):
        done = wait_status(http, task["id"], {"completed", "failed"}, timeout=60)
        assert done["status"] == "completed", done.get("error")
        paths.append(fetch(done["output"][0]["audio"], tmp_path / f"{n}.mp3"))
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_cancel_mid_render_stops_within_two_seconds_leaving_no_file(
    srv: ServerProcess, http: httpx.Client
) -> None:
    task = submit(http, "music", input={"prompt": "a long epic", "duration": 240, "seed": 1})

    done = cancel_while_rendering(http, srv.data_dir, task["id"], past_percent=3)
    assert done["progress"]["percent"] < 100


def test_the_catalogue_publishes_the_input_schema_and_price(http: httpx.Client) -> None:
    found = json_of(http.get("/v1/workflows/music"), 200)
    schema = found["input_schema"] if "input_schema" in found else found["input"]
    properties = schema["properties"]
    assert properties["duration"]["minimum"] == 2 and properties["duration"]["maximum"] == 240
    assert properties["count"]["maximum"] == 2
    assert {option["type"] for option in properties["tags"]["anyOf"]} == {"string", "array"}
    assert schema["required"] == ["prompt"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"duration": 1.9}, "duration"),
        ({"duration": 240.5}, "duration"),
        ({"duration": "long"}, "duration"),
        ({"count": 3}, "count"),
        ({"count": 0}, "count"),
        ({"tags": 5}, "tags"),
        ({"tags": ["lofi", 3]}, "tags"),
        ({"tags": {"genre": "lofi"}}, "tags"),
        ({"tags": ["x" * 41]}, "tags"),
        ({"tags": [f"t{i}" for i in range(21)]}, "tags"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"instrumental": "maybe"}, "instrumental"),
        ({"lyrics": "la la"}, "lyrics"),
    ],
)
def test_bad_inputs_are_422_naming_the_field(
    http: httpx.Client, change: dict[str, Any], field: str
) -> None:
    body = {"prompt": "a song", "duration": 2, **change}
    if change.get("prompt", "") is None:
        del body["prompt"]
    response = http.post("/v1/tasks", json={"workflow": "music", "input": body})
    assert_error(response, 422, "invalid_param", f"input.{field}")
