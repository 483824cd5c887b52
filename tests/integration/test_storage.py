"""One storage suite, run against both backends: a local directory and an S3 bucket
served by moto's server mode on 127.0.0.1."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskgate.services.storage import BlobNotFound, LocalStorage, S3Storage, Storage, open_storage
from taskgate.settings import Settings
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server, running_s3


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running_s3() as server:
        yield server


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "blobs")
    s3: S3Server = request.getfixturevalue("s3")
    return S3Storage(
        s3.new_bucket(),
        "pre/fix",
        scratch_dir=tmp_path / "scratch",
        endpoint_url=s3.endpoint_url,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
    )


def _blob(size: int) -> bytes:
    return os.urandom(size)


def _read(storage: Storage, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(storage.read(key, start, end))


def test_put_stream_then_read_whole_and_ranges(storage: Storage) -> None:
    data = _blob(3 * 1024 * 1024 + 17)
    assert storage.put_stream("files/a", io.BytesIO(data)) == len(data)
    assert storage.exists("files/a")
    assert storage.size("files/a") == len(data)
    assert _read(storage, "files/a") == data
    assert _read(storage, "files/a", 0, 0) == data[:1]
    assert _read(storage, "files/a", 5, 1_500_000) == data[5:1_500_001]
    assert _read(storage, "files/a", len(data) - 10) == data[-10:]
    assert _read(storage, "files/a", len(data) - 1, len(data) - 1) == data[-1:]


def test_put_file_moves_the_file_in(storage: Storage, tmp_path: Path) -> None:
    data = _blob(20 * 1024 * 1024 + 5)  # past the multipart threshold on S3
    source = storage.scratch_dir / "upload.bin"
    source.write_bytes(data)
    storage.put_file("files/big", source)
    assert not source.exists()
    assert storage.size("files/big") == len(data)
    assert _read(storage, "files/big") == data


def test_put_replaces_a_blob_whole(storage: Storage) -> None:
    storage.put_stream("files/r", io.BytesIO(b"old contents"))
    storage.put_stream("files/r", io.BytesIO(b"new"))
    assert _read(storage, "files/r") == b"new"


def test_missing_blobs(storage: Storage, tmp_path: Path) -> None:
    assert not storage.exists("files/none")
    with pytest.raises(BlobNotFound):
        storage.size("files/none")
    with pytest.raises(BlobNotFound):
        storage.read("files/none")
    with pytest.raises(BlobNotFound):
        storage.local_path("files/none", tmp_path / "work")
    storage.delete("files/none")  # not an error


def test_delete(storage: Storage) -> None:
    storage.put_stream("files/d", io.BytesIO(b"x"))
    storage.delete("files/d")
    assert not storage.exists("files/d")
    with pytest.raises(BlobNotFound):
        storage.read("files/d")


def test_local_path_holds_the_bytes(storage: Storage, tmp_path: Path) -> None:
    data = _blob(70_000)
    storage.put_stream("files/l", io.BytesIO(data))
    path = storage.local_path("files/l", tmp_path / "work")
    assert path.read_bytes() == data


class _Broken(io.RawIOBase):
    """A stream that fails after ``fail_after`` bytes: a client that went away."""

    def __init__(self, fail_after: int) -> None:
        self.left = fail_after

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise ConnectionResetError("the client went away")
        n = min(len(buffer), self.left, 64 * 1024)
        buffer[:n] = b"\x01" * n
        self.left -= n
        return n


@pytest.mark.parametrize("fail_after", [0, 100_000, 20 * 1024 * 1024])
def test_a_write_that_fails_leaves_nothing(storage: Storage, fail_after: int) -> None:
    storage.put_stream("files/keep", io.BytesIO(b"kept"))
    with pytest.raises(ConnectionResetError):
        storage.put_stream("files/half", io.BufferedReader(_Broken(fail_after)))
    with pytest.raises(ConnectionResetError):
        storage.put_stream("files/keep", io.BufferedReader(_Broken(fail_after)))
    assert not storage.exists("files/half")
    assert _read(storage, "files/keep") == b"kept"
    if isinstance(storage, LocalStorage):
        leftovers = [p for p in storage.root.rglob("*") if p.is_file()]
        assert leftovers == [storage.root / "files" / "keep"]


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "..", "a/./b"])
def test_bad_keys_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(ValueError, match="not a blob key"):
        storage.put_stream(key, io.BytesIO(b"x"))


def test_the_settings_pick_the_backend(tmp_path: Path, s3: S3Server) -> None:
    local = open_storage(Settings(data_dir=tmp_path / "d"))
    assert isinstance(local, LocalStorage)
    assert local.root == (tmp_path / "d" / "blobs").resolve()
    bucket = s3.new_bucket()
    remote = open_storage(
        Settings(
            data_dir=tmp_path / "d",
            storage_url=f"s3://{bucket}/some/prefix",
            s3_endpoint_url=s3.endpoint_url,
            s3_access_key_id=ACCESS_KEY,
            s3_secret_access_key=SECRET_KEY,
        )
    )
    assert isinstance(remote, S3Storage)
    remote.put_stream("files/x", io.BytesIO(b"hello"))
    listed = s3.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Key"] for item in listed] == ["some/prefix/files/x"]
    with pytest.raises(ValueError, match="s3://"):
        open_storage(Settings(data_dir=tmp_path / "d", storage_url="ftp://x/y"))
