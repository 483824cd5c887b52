"""Blob storage behind one interface: a local directory or an S3-compatible bucket.

Blobs are named by keys such as ``files/file_01J…``. Every write is atomic: a local
blob is written under a temporary name in the same directory tree and renamed into
place; an S3 object appears only when its PUT (or multipart upload) completes. A
crash mid-write leaves no half blob under its key.

The interface is synchronous (boto3 is); the API calls it from a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from taskgate.settings import Settings

#: Size of the chunks :meth:`Storage.read` yields.
CHUNK = 1024 * 1024


class BlobNotFound(Exception):
    """No blob under this key."""


class Storage(Protocol):
    """Where file contents live."""

    #: A local directory for files on their way into the storage (uploads being
    #: received, outputs being kept). On the local backend it is on the blobs'
    #: filesystem, so that :meth:`put_file` is a rename.
    scratch_dir: Path

    def put_file(self, key: str, path: Path) -> None:
        """Store the local file ``path`` under ``key`` (replacing any blob there) and
        remove ``path``. Atomic: readers see the old blob or the whole new one."""
        ...

    def put_stream(self, key: str, stream: BinaryIO) -> int:
        """Store what ``stream`` holds under ``key``, atomically; returns its size."""
        ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes ``start``..``end`` (inclusive; None: to the end) of a blob, in
        chunks. Raises :class:`BlobNotFound` before yielding if there is none."""
        ...

    def size(self, key: str) -> int:
        """The blob's size in bytes (:class:`BlobNotFound` if there is none)."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove a blob; removing one that is not there is not an error."""
        ...

    def local_path(self, key: str, scratch: Path) -> Path:
        """A local path holding the blob's bytes, for a handler to read: the blob
        itself on the local backend, a copy downloaded into ``scratch`` on S3."""
        ...


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"not a blob key: {key!r}")
    return key


class LocalStorage:
    """Blobs as files under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.scratch_dir = self.root / ".tmp"
        self.scratch_dir.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
        try:
            os.replace(path, target)
        except OSError:
            # Another filesystem: copy beside the target, then rename.
            self._put(target, path.open("rb"))
            path.unlink()

    def put_stream(self, key: str, stream: BinaryIO) -> int:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        return self._put(target, stream)

    def _put(self, target: Path, stream: BinaryIO) -> int:
        temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        try:
            with stream, temp.open("wb") as out:
                shutil.copyfileobj(stream, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
                size = out.tell()
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return size

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc
        return _chunks(handle, start, end)

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str, scratch: Path) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFound(key)
        return path


def _chunks(handle: BinaryIO, start: int, end: int | None) -> Iterator[bytes]:
    with handle:
        handle.seek(start)
        left = None if end is None else end - start + 1
        while left is None or left > 0:
            chunk = handle.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk


class S3Storage:
    """Blobs as objects in an S3-compatible bucket, under a key prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        scratch_dir: Path,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region: str = "us-east-1",
    ) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.scratch_dir = scratch_dir
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        # Parts of 16 MiB, four at a time: a 100 MiB file is one multipart upload.
        self._transfer = TransferConfig(
            multipart_threshold=16 * CHUNK, multipart_chunksize=16 * CHUNK, max_concurrency=4
        )

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _missing(self, exc: Exception) -> bool:
        response = getattr(exc, "response", None) or {}
        code = str(response.get("Error", {}).get("Code", ""))
        return code in {"404", "NoSuchKey", "NotFound"}

    def put_file(self, key: str, path: Path) -> None:
        self._client.upload_file(str(path), self.bucket, self._key(key), Config=self._transfer)
        path.unlink(missing_ok=True)

    def put_stream(self, key: str, stream: BinaryIO) -> int:
        counter = _Counting(stream)
        with stream:
            self._client.upload_fileobj(counter, self.bucket, self._key(key), Config=self._transfer)
        return counter.count

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        extra = {}
        if start or end is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)["Body"]
        except self._client.exceptions.ClientError as exc:
            if self._missing(exc):
                raise BlobNotFound(key) from exc
            raise
        return _stream_body(body)

    def size(self, key: str) -> int:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except self._client.exceptions.ClientError as exc:
            if self._missing(exc):
                raise BlobNotFound(key) from exc
            raise
        return int(head["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except BlobNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def local_path(self, key: str, scratch: Path) -> Path:
        scratch.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=scratch, prefix="input-")
        os.close(fd)
        target = Path(name)
        try:
            self._client.download_file(self.bucket, self._key(key), str(target))
        except self._client.exceptions.ClientError as exc:
            target.unlink(missing_ok=True)
            if self._missing(exc):
                raise BlobNotFound(key) from exc
            raise
        return target


def _stream_body(body: Any) -> Iterator[bytes]:
    with contextlib.closing(body):
        yield from body.iter_chunks(CHUNK)


class _Counting:
    """A read-only file object that counts what is read from it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        return data


def open_storage(settings: Settings) -> Storage:
    """The storage the settings name: ``TASKGATE_STORAGE_URL=s3://bucket/prefix`` (with
    the S3 endpoint and credential settings), else the data dir's blob directory."""
    url = settings.storage_url
    if not url:
        return LocalStorage(settings.blob_dir)
    scheme, _, rest = url.partition("://")
    if scheme == "file":
        return LocalStorage(Path(rest))
    if scheme != "s3":
        raise ValueError(f"TASKGATE_STORAGE_URL must be s3://bucket/prefix or file://, not {url!r}")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"TASKGATE_STORAGE_URL names no bucket: {url!r}")
    return S3Storage(
        bucket,
        prefix,
        scratch_dir=settings.data_dir / "tmp",
        endpoint_url=settings.s3_endpoint_url,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
    )
