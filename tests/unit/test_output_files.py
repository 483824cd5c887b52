"""Output files held by results: how a handler's paths become file entries, how
they are found and replaced at any depth, and which file fields take which kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from taskgate.payloads import map_output_files, output_files
from taskgate.worker.executor import _place_files
from taskgate.workflows.builtin.slideshow import SlideshowInput
from taskgate.workflows.sdk import FileRef, ImageRef, file_kinds, file_refs

A = "file_01J00000000000000000000000"
B = "file_01J00000000000000000000001"
C = "file_01J00000000000000000000002"


def test_paths_in_results_become_their_files_and_the_rest_follow() -> None:
    audio, cover, extra = Path("/w/track.mp3"), Path("/w/cover.png"), Path("/w/log.txt")
    files = {path: {"name": path.name, "path": str(path)} for path in (audio, cover, extra)}
    output = [{"type": "track", "audio": audio, "art": [{"image": cover}], "title": "x"}]
    placed = _place_files(output, files)
    assert placed == [
        {"type": "track", "audio": files[audio], "art": [{"image": files[cover]}], "title": "x"},
        files[extra],
    ]


def test_a_result_cannot_hold_a_foreign_path_or_one_file_twice() -> None:
    path = Path("/w/a.mp4")
    files = {path: {"name": "a.mp4", "path": "/w/a.mp4"}}
    with pytest.raises(ValueError, match="not an output file"):
        _place_files([{"video": Path("/etc/passwd")}], files)
    with pytest.raises(ValueError, match="twice"):
        _place_files([{"video": path, "again": path}], files)


def test_file_entries_are_found_and_replaced_at_any_depth() -> None:
    output: list[dict[str, Any]] = [
        {"type": "track", "audio": {"file_id": "a"}, "image": {"file_id": "b"}},
        {"file_id": "c"},
        {"type": "note", "text": "no file"},
    ]
    assert [item["file_id"] for item in output_files(output)] == ["a", "b", "c"]
    changed = map_output_files(output, lambda item: {**item, "url": "u-" + item["file_id"]})
    assert changed[0]["audio"] == {"file_id": "a", "url": "u-a"}
    assert changed[1] == {"file_id": "c", "url": "u-c"}
    assert changed[2] == output[2]
    assert "url" not in output[0]["audio"]  # the input is not changed


class Mixed(BaseModel):
    any_file: FileRef
    pictures: list[ImageRef]


def test_file_kinds_name_the_fields_that_take_one_kind() -> None:
    data = {"any_file": A, "pictures": [B, C]}
    assert file_refs(Mixed, data) == {
        "input.any_file": A,
        "input.pictures.0": B,
        "input.pictures.1": C,
    }
    assert file_kinds(Mixed, data) == {"input.pictures.0": "image", "input.pictures.1": "image"}


def test_slideshow_file_kinds_reach_into_the_music() -> None:
    data = SlideshowInput.model_validate({"images": [A], "music": {"file_id": B}}).model_dump(
        mode="json"
    )
    assert file_kinds(SlideshowInput, data) == {
        "input.images.0": "image",
        "input.music.file_id": "audio",
    }
