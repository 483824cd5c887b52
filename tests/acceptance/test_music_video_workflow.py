"""The ``music-video`` workflow end to end: audio uploaded over HTTP or taken from a
completed ``music`` task, the MP4 fetched through its signed link and decoded frame
by frame; visuals that follow the sound; cancellation; bad inputs."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray

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
RATE = 22_050


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, backend)


@pytest.fixture(scope="module")
def acct(srv: ServerProcess) -> Account:
    return quick_account(srv.data_dir, "musicvideo", credits="100")


@pytest.fixture
def http(srv: ServerProcess, acct: Account) -> Iterator[httpx.Client]:
    with srv.client(acct.key) as client:
        yield client


def wav(sound: NDArray[np.float64]) -> bytes:
    """Mono 22.05 kHz 16-bit WAV bytes."""
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(RATE)
        file.writeframes((np.clip(sound, -1, 1) * 32767).astype("<i2").tobytes())
    return out.getvalue()


def loud_then_silent(seconds: float, loud: float) -> NDArray[np.float64]:
    """Chords pulsing four times a second with noise, then silence."""
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(3)
    chord = sum(np.sin(2 * np.pi * f * t) for f in (110.0, 220.0, 440.0, 1320.0, 3520.0))
    pulse = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    sound = 0.15 * chord * pulse + 0.05 * rng.standard_normal(len(t))
    sound[t >= loud] = 0.0
    return np.asarray(sound, dtype=np.float64)


def fetch(item: dict[str, Any], to: Path) -> Path:
    response = httpx.get(item["url"], timeout=30)
    assert response.status_code == 200, response.text
    to.write_bytes(response.content)
    return to


def bar_pixels(rgb: NDArray[np.uint8]) -> float:
    """The share of bright pixels where the spectrum's bars stand (the background
    there is a dark gradient)."""
    h, w = rgb.shape[:2]
    area = rgb[int(h * 0.28) : int(h * 0.88), int(w * 0.08) : int(w * 0.92)]
    return float((area.mean(axis=2) > 90).mean())


def test_bars_follow_the_sound_and_vanish_in_silence(http: httpx.Client, tmp_path: Path) -> None:
    audio = upload(http, wav(loud_then_silent(4.0, loud=2.0)), "half.wav")
    task = submit(
        http, "music-video", input={"audio": audio, "resolution": "360p", "title": "Half — é"}
    )
    done = wait_status(http, task["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed", done.get("error")
    [result] = done["output"]
    assert (result["type"], result["style"], result["width"], result["height"]) == (
        "music_video",
        "spectrum",
        640,
        360,
    )
    assert result["video"]["content_type"] == "video/mp4"
    assert result["thumbnail"]["content_type"] == "image/jpeg"
    path = fetch(result["video"], tmp_path / "video.mp4")
    seen = decode_video(path)
    assert (seen.codec, seen.pix_fmt, seen.width, seen.height) == ("h264", "yuv420p", 640, 360)
    assert abs(seen.seconds - 4.0) <= 0.1, seen.frames
    sound = decode(path)
    assert sound.codec == "aac" and abs(sound.seconds - 4.0) <= 0.1
    assert float(np.sqrt(np.mean(sound.samples[:, : sound.sample_rate] ** 2))) > 0.05

    bars = measure_frames(path, bar_pixels)
    loud = bars[int(0.25 * FPS) : int(1.9 * FPS)]
    quiet = bars[int(2.5 * FPS) :]
    assert min(loud) > 0.03, loud
    assert max(quiet) < 0.002, quiet
    # Not static: the bars pulse with the sound.
    assert float(np.std(loud)) > 0.005, loud
    assert done["usage"]["video_seconds"] == pytest.approx(4.0)


def test_particles_fly_with_the_sound_and_settle_in_silence(
    http: httpx.Client, tmp_path: Path
) -> None:
    audio = upload(http, wav(loud_then_silent(5.0, loud=2.0)), "half.wav")
    body = {"audio": audio, "resolution": "360p", "style": "particles"}
    task = submit(http, "music-video", input=body)
    done = wait_status(http, task["id"], {"completed", "failed"}, timeout=60)
    assert done["status"] == "completed", done.get("error")
    assert done["output"][0]["style"] == "particles"
    path = fetch(done["output"][0]["video"], tmp_path / "particles.mp4")
    seen = decode_video(path)
    assert (seen.width, seen.height) == (640, 360)
    assert abs(seen.seconds - 5.0) <= 0.1, seen.frames

    sparks = measure_frames(path, bar_pixels)
    loud = sparks[int(0.5 * FPS) : int(1.9 * FPS)]
    quiet = sparks[int(3.4 * FPS) :]
    assert min(loud) > 0.03, loud
    assert max(quiet) < 0.002, quiet
    # The loud half moves from frame to frame; the silent half stands still.
    moving = measure_frames(path, lambda rgb: float(rgb.astype(np.float32).mean()))
    centres = np.array(moving)
    assert float(np.abs(np.diff(centres[int(0.5 * FPS) : int(1.9 * FPS)])).max()) > 0.3
    assert float(np.abs(np.diff(centres[int(3.4 * FPS) :])).max()) < 0.05


def test_a_music_tasks_tracks_by_id_and_index(http: httpx.Client, tmp_path: Path) -> None:
    tracks = submit(http, "music", input={"prompt": "lofi", "duration": 2, "seed": 4, "count": 2})
    made = wait_status(http, tracks["id"], {"completed", "failed"}, timeout=60)
    assert made["status"] == "completed", made.get("error")
    runs = []
    for audio in (tracks["id"], {"task_id": tracks["id"], "index": 1}):
        body = {"audio": audio, "resolution": "360p", "aspect": "9:16", "style": "waveform"}
        runs.append(submit(http, "music-video", input=body))
    for n, (task, track) in enumerate(zip(runs, made["output"], strict=True)):
        done = wait_status(http, task["id"], {"completed", "failed"}, timeout=60)
        assert done["status"] == "completed", done.get("error")
        assert done["input"]["audio"] == {"task_id": tracks["id"], "index": n}
        path = fetch(done["output"][0]["video"], tmp_path / f"{n}.mp4")
        seen = decode_video(path)
        assert (seen.width, seen.height) == (360, 640)
        assert abs(seen.seconds - track["duration"]) <= 0.1
        # The muxed audio is the track's own.
        ours = decode(path)
        theirs = decode(fetch(track["audio"], tmp_path / f"{n}.mp3"))
        assert abs(ours.seconds - theirs.seconds) <= 0.1
        rms = float(np.sqrt(np.mean(ours.samples**2)))
        assert rms == pytest.approx(float(np.sqrt(np.mean(theirs.samples**2))), rel=0.15)


def test_cancel_mid_render_stops_within_two_seconds_leaving_no_file(
    srv: ServerProcess, http: httpx.Client
) -> None:
    audio = upload(http, wav(loud_then_silent(90.0, loud=90.0)), "long.wav")
    task = submit(http, "music-video", input={"audio": audio, "resolution": "360p"})

    cancel_while_rendering(http, srv.data_dir, task["id"], past_percent=15)


# -- bad inputs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def refs(srv: ServerProcess, acct: Account) -> dict[str, str]:
    """An image and a sound of this account, a stranger's sound, a cancelled task."""
    stranger = quick_account(srv.data_dir, "stranger")
    with srv.client(stranger.key) as http:
        foreign = upload(http, filesamples.audio("wav"), "theirs.wav")
    with srv.client(acct.key) as http:
        image = upload(http, filesamples.image("png"), "picture.png")
        sound = upload(http, filesamples.audio("wav"), "tone.wav")
        waiting = submit(http, "wait", input={"seconds": 60})
        assert http.post(f"/v1/tasks/{waiting['id']}/cancel").status_code in (200, 202)
        wait_status(http, waiting["id"], {"cancelled"})
    return {"image": image, "sound": sound, "foreign": foreign, "cancelled": waiting["id"]}


UNKNOWN_TASK = "task_01J0000000000000000000000Z"


def _bad(refs: dict[str, str]) -> dict[str, tuple[dict[str, Any], str]]:
    sound, image = refs["sound"], refs["image"]
    return {
        "image-as-audio": ({"audio": image}, "input.audio"),
        "foreign-audio": ({"audio": refs["foreign"]}, "input.audio"),
        "not-a-ref": ({"audio": "song.mp3"}, "input.audio"),
        "unknown-task": ({"audio": UNKNOWN_TASK}, "input.audio"),
        "cancelled-task": ({"audio": refs["cancelled"]}, "input.audio"),
        "bad-task-object": ({"audio": {"task_id": "task_x"}}, "input.audio"),
        "negative-index": ({"audio": {"task_id": UNKNOWN_TASK, "index": -1}}, "input.audio"),
        "style": ({"audio": sound, "style": "lasers"}, "input.style"),
        "too-many-backgrounds": (
            {"audio": sound, "background_images": [image] * 11},
            "input.background_images",
        ),
        "audio-as-background": (
            {"audio": sound, "background_images": [image, sound]},
            "input.background_images.1",
        ),
        "title-too-long": ({"audio": sound, "title": "x" * 101}, "input.title"),
        "aspect": ({"audio": sound, "aspect": "21:9"}, "input.aspect"),
        "no-audio": ({}, "input.audio"),
    }


NAMES = [
    "image-as-audio",
    "foreign-audio",
    "not-a-ref",
    "unknown-task",
    "cancelled-task",
    "bad-task-object",
    "negative-index",
    "style",
    "too-many-backgrounds",
    "audio-as-background",
    "title-too-long",
    "aspect",
    "no-audio",
]


def counts(srv: ServerProcess, account: Account) -> tuple[int, ...]:
    return tuple(
        int(sql(srv.data_dir, f"SELECT count(*) FROM {t} WHERE account_id = ?", account.id)[0][0])
        for t in ("tasks", "ledger", "files")
    )


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_are_422_naming_the_field(
    srv: ServerProcess, acct: Account, http: httpx.Client, refs: dict[str, str], name: str
) -> None:
    body, param = _bad(refs)[name]
    before = counts(srv, acct)
    balance = json_of(http.get("/v1/usage"), 200)["balance"]
    response = http.post("/v1/tasks", json={"workflow": "music-video", "input": body})
    assert_error(response, 422, "invalid_param", param)
    assert counts(srv, acct) == before
    assert json_of(http.get("/v1/usage"), 200)["balance"] == balance


def test_an_index_past_the_tracks_is_422(http: httpx.Client) -> None:
    tracks = submit(http, "music", input={"prompt": "calm", "duration": 2, "seed": 2})
    assert wait_status(http, tracks["id"], {"completed", "failed"}, timeout=60)["status"] == (
        "completed"
    )
    response = http.post(
        "/v1/tasks",
        json={"workflow": "music-video", "input": {"audio": {"task_id": tracks["id"], "index": 1}}},
    )
    error = assert_error(response, 422, "invalid_param", "input.audio")
    assert "no index 1" in error["message"]
