"""``client.files`` against a real server: upload in every form, read, link,
download (whole or not at all), delete, and the errors."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from taskgate.client import (
    APIError,
    AsyncClient,
    Client,
    ConflictError,
    NotFoundError,
)
from tests.acceptance.apitools import Account
from tests.helpers import ServerProcess

pytestmark = pytest.mark.acceptance
UNKNOWN_FILE = "file_01J0000000000000000000000Z"


def png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_read_link_download_and_delete(client: Client, tmp_path: Path) -> None:
    red, green = png("red"), png("green")
    (tmp_path / "red.png").write_bytes(red)
    by_path = client.files.upload(tmp_path / "red.png")
    assert (by_path.object, by_path.filename, by_path.purpose, by_path.content_type) == (
        "file",
        "red.png",
        "input",
        "image/png",
    )
    assert (by_path.bytes, by_path.sha256) == (len(red), hashlib.sha256(red).hexdigest())
    by_bytes = client.files.upload(green, filename="green.png")
    with (tmp_path / "red.png").open("rb") as opened:
        by_file = client.files.upload(opened)
    assert (by_bytes.filename, by_file.filename) == ("green.png", "red.png")
    assert client.files.get(by_path.id).model_dump() == by_path.model_dump()
    assert [found.id for found in client.files.list(limit=2)] == [
        by_file.id,
        by_bytes.id,
        by_path.id,
    ]

    # Into a directory under the server's name, or to a path; nothing else is left.
    (tmp_path / "down").mkdir()
    saved = client.files.download(by_bytes.id, tmp_path / "down")
    assert saved == tmp_path / "down" / "green.png"
    assert saved.read_bytes() == green
    assert client.files.download(by_path.id, tmp_path / "copy.png").read_bytes() == red
    assert sorted(path.name for path in (tmp_path / "down").iterdir()) == ["green.png"]

    link = client.files.url(by_path.id, expires_in=60)
    assert httpx.get(link.url).content == red  # no key needed

    # An input in use by a running task cannot go; a free one can.
    task = client.tasks.create("copy-files", {"source": by_path.id, "hold_seconds": 30})
    with pytest.raises(ConflictError) as busy:
        client.files.delete(by_path.id)
    assert busy.value.code == "file_in_use"
    client.tasks.cancel(task.id)
    gone = client.files.delete(by_bytes.id)
    assert (gone.id, gone.deleted) == (by_bytes.id, True)
    with pytest.raises(NotFoundError):
        client.files.get(by_bytes.id)


def test_file_errors(client: Client, tmp_path: Path) -> None:
    for call in (
        lambda: client.files.get(UNKNOWN_FILE),
        lambda: client.files.download(UNKNOWN_FILE, tmp_path),
        lambda: client.files.delete(UNKNOWN_FILE),
    ):
        with pytest.raises(NotFoundError) as missing:
            call()
        assert missing.value.code == "file_not_found"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(APIError) as refused:
        client.files.upload(b"plain text", filename="notes.txt")
    assert (refused.value.status, refused.value.code) == (415, "unsupported_media_type")
    with pytest.raises(FileNotFoundError):
        client.files.upload(tmp_path / "missing.png")
    assert list(client.files.list()) == []


def test_async_upload_and_download(
    sdk_server: ServerProcess, account: Account, tmp_path: Path
) -> None:
    red = png("red")

    async def scenario() -> None:
        async with AsyncClient(sdk_server.base_url, account.key) as client:
            made = await client.files.upload(red, filename="red.png")
            saved = await client.files.download(made.id, tmp_path)
            assert (saved, saved.read_bytes()) == (tmp_path / "red.png", red)
            assert [found.id async for found in client.files.list()] == [made.id]

    asyncio.run(scenario())
