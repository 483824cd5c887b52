"""Files as clients see them: uploads, reads, signed links, deletion, task inputs.

A file's bytes live in the :class:`~taskgate.services.storage.Storage` under
``files/<id>``; its row says what it is and until when it lives. The blob is
stored before the row is written, so a crash in between leaves at worst an
unreferenced blob, never a row without its bytes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import re
import tempfile
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from taskgate.core.clock import MICROS, iso, now_us, to_us
from taskgate.core.errors import (
    FileInUse,
    FileNotFound,
    Forbidden,
    Gone,
    InvalidFile,
    InvalidInput,
    InvalidParam,
    LinkExpired,
    UnsupportedMediaType,
)
from taskgate.core.ids import has_prefix, new_id
from taskgate.core.models import StoredFile, Task
from taskgate.services import media, netguard
from taskgate.services.signing import Signer
from taskgate.services.storage import Storage
from taskgate.store import files as repo
from taskgate.store.db import Conn, Database

log = logging.getLogger(__name__)

MAX_PAGE = 100
MAX_FILENAME_CHARS = 255
#: How long fetching an input URL may take, in all.
FETCH_TIMEOUT_SECONDS = 30.0
_PURPOSES = frozenset({"input", "output"})
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


def sanitize_filename(name: str | None, default: str = "file") -> str:
    """A display name without paths, control characters or surrounding dots and
    spaces, at most 255 characters (keeping the extension)."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("", name)
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = name.strip(" .")
    if not name:
        return default
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: MAX_FILENAME_CHARS - len(ext) - 1] + "." + ext
        else:
            name = name[:MAX_FILENAME_CHARS]
    return name


def encode_cursor(file_id: str) -> str:
    return base64.urlsafe_b64encode(file_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidParam("Not a cursor from this list.", param="cursor") from exc
    if not value.startswith("file_"):
        raise InvalidParam("Not a cursor from this list.", param="cursor")
    return value


@dataclass(frozen=True, slots=True)
class Received:
    """An upload spooled to a local file, with its size and digest."""

    path: Path
    filename: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class FilePolicy:
    max_upload_bytes: int
    input_retention_us: int
    allow_private_urls: bool


class FileService:
    def __init__(self, db: Database, storage: Storage, signer: Signer, policy: FilePolicy) -> None:
        self._db = db
        self.storage = storage
        self._signer = signer
        self.policy = policy

    # -- uploads -----------------------------------------------------------------

    def spool(self) -> tuple[Path, Any]:
        """A new scratch file for an upload on its way in (path, open binary handle)."""
        fd, name = tempfile.mkstemp(dir=self.storage.scratch_dir, prefix="upload-", suffix=".part")
        return Path(name), os.fdopen(fd, "wb")

    async def create(
        self,
        account_id: str,
        received: Received,
        *,
        purpose: str = "input",
        source_url: str | None = None,
    ) -> StoredFile:
        """Probe a spooled upload, store it and record it. The spooled file is gone
        afterwards, whatever happens."""
        try:
            info = await asyncio.to_thread(media.inspect_upload, received.path)
            now = now_us()
            record = StoredFile(
                id=new_id("file"),
                account_id=account_id,
                purpose=purpose,
                filename=received.filename,
                content_type=info.content_type,
                kind=info.kind,
                bytes=received.size,
                sha256=received.sha256,
                width=info.width,
                height=info.height,
                duration=info.duration,
                task_id=None,
                source_url=source_url,
                created_at=now,
                expires_at=now + self.policy.input_retention_us,
            )
            await asyncio.to_thread(self.storage.put_file, record.key, received.path)
        finally:
            received.path.unlink(missing_ok=True)
        try:
            await self._db.write(lambda conn: repo.insert_files(conn, [record]))
        except BaseException:
            await asyncio.to_thread(self.storage.delete, record.key)
            raise
        return record

    # -- reading -------------------------------------------------------------------

    async def get(self, account_id: str, file_id: str) -> StoredFile:
        found = await self._db.read(lambda conn: repo.get(conn, account_id, file_id))
        if found is None:
            raise FileNotFound(file_id)
        return found

    async def list(
        self,
        account_id: str,
        *,
        limit: int = 20,
        cursor: str | None = None,
        purpose: str | None = None,
        task_id: str | None = None,
    ) -> tuple[list[StoredFile], bool, str | None]:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidParam(f"limit is 1–{MAX_PAGE}.", param="limit")
        if purpose is not None and purpose not in _PURPOSES:
            raise InvalidParam("purpose is input or output.", param="purpose")
        before = decode_cursor(cursor) if cursor else None
        found, more = await self._db.read(
            lambda conn: repo.list_page(
                conn, account_id, limit=limit, before_id=before, purpose=purpose, task_id=task_id
            )
        )
        return found, more, encode_cursor(found[-1].id) if more and found else None

    async def readable(self, account_id: str, file_id: str) -> StoredFile:
        """A file of the account whose content can be served (410 once expired)."""
        found = await self.get(account_id, file_id)
        if found.expired(now_us()):
            raise Gone("The file has expired and its content was deleted.")
        return found

    async def readable_by_link(
        self, file_id: str, expires: str | None, signature: str | None
    ) -> StoredFile:
        """The file a signed link opens: 403 ``invalid_signature`` when the signature
        does not match, 410 ``file_expired`` once the file expired, 403
        ``link_expired`` past the link's own expiry."""
        if not expires or not signature or not re.fullmatch(r"[0-9]{1,12}", expires):
            raise Forbidden("The link's signature is missing or malformed.")
        when = int(expires)
        if not self._signer.check_file_signature(file_id, when, signature):
            raise Forbidden("The link's signature does not match.")
        found = await self._db.read(lambda conn: repo.get_by_id(conn, file_id))
        if found is None:
            raise FileNotFound(file_id)
        now = now_us()
        # The file's own expiry is the more useful answer: no new link will help.
        if found.expired(now):
            raise Gone("The file has expired and its content was deleted.")
        if when * MICROS <= now:
            raise LinkExpired("The link has expired; ask for a new one.")
        return found

    def link(
        self, record: StoredFile, now: int, expires_in: float | None = None
    ) -> tuple[str, int]:
        """A signed path to a file's content and when it stops working (µs): after
        ``expires_in`` seconds (default: the link TTL), never past the file's expiry."""
        ttl = to_us(expires_in) if expires_in is not None else None
        return self._signer.file_link(record.id, record.expires_at, now, ttl)

    # -- deleting ------------------------------------------------------------------

    async def delete(self, account_id: str, file_id: str) -> None:
        def write(conn: Conn) -> StoredFile:
            found = repo.get(conn, account_id, file_id)
            if found is None:
                raise FileNotFound(file_id)
            if repo.in_use(conn, file_id):
                raise FileInUse("A task that is not finished uses this file.")
            repo.remove(conn, file_id)
            return found

        removed = await self._db.write(write)
        await asyncio.to_thread(self.storage.delete, removed.key)

    async def delete_blobs(self, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                await asyncio.to_thread(self.storage.delete, key)
            except Exception:
                log.exception("could not delete blob %s", key)

    # -- task inputs -----------------------------------------------------------------

    async def resolve_inputs(
        self,
        account_id: str,
        refs: Mapping[str, str],
        kinds: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """The file each input ref (``param`` → file id or URL) stands for, as
        ``{ref: file id}``. URLs are fetched and stored as input files. An unknown,
        foreign or expired id, a URL that cannot be fetched or is not an accepted
        file, or a file of another kind than ``kinds[param]`` (``image``…) requires,
        is a 422 naming the field."""
        kinds = kinds or {}
        found_kinds: dict[str, str] = {}
        ids = {ref for ref in refs.values() if not _is_url(ref)}
        known = await self._db.read(lambda conn: repo.get_many(conn, account_id, ids))
        now = now_us()
        resolved: dict[str, str] = {}
        for param, ref in refs.items():
            if ref not in resolved:
                if _is_url(ref):
                    fetched = await self._fetch(account_id, ref, param)
                    resolved[ref], found_kinds[ref] = fetched.id, fetched.kind
                else:
                    found = known.get(ref)
                    if found is None or not has_prefix(ref, "file"):
                        raise InvalidInput(f"{param}: no file {ref!r}.", param=param)
                    if found.expired(now):
                        raise InvalidInput(f"{param}: the file {ref!r} has expired.", param=param)
                    resolved[ref], found_kinds[ref] = ref, found.kind
            wanted = kinds.get(param)
            if wanted is not None and found_kinds[ref] != wanted:
                raise InvalidInput(
                    f"{param}: must be {_article(wanted)} file, not {_article(found_kinds[ref])}.",
                    param=param,
                )
        return resolved

    def link_task_inputs(self, conn: Conn, task: Task, inputs: Mapping[str, str]) -> None:
        """In the submit's transaction: record the task's input files, and keep them
        alive at least until the input retention after now. A file deleted since it
        was resolved is a 422."""
        present = repo.get_many(conn, task.account_id, inputs.values())
        for ref, file_id in inputs.items():
            if file_id not in present:
                raise InvalidInput(
                    f"input: no file {file_id!r}.", param="input", details={"ref": ref}
                )
        repo.link_inputs(
            conn, task.id, inputs, keep_until=now_us() + self.policy.input_retention_us
        )

    async def _fetch(self, account_id: str, url: str, param: str) -> StoredFile:
        url = await netguard.check_url(
            url, allow_private=self.policy.allow_private_urls, param=param
        )
        path, handle = self.spool()
        digest = hashlib.sha256()
        size = 0
        limit = self.policy.max_upload_bytes
        try:
            with handle:
                async with (
                    netguard.guarded_client(
                        allow_private=self.policy.allow_private_urls,
                        timeout=FETCH_TIMEOUT_SECONDS,
                    ) as client,
                    client.stream("GET", url) as response,
                ):
                    if response.status_code != 200:
                        raise InvalidInput(
                            f"{param}: fetching {url} answered HTTP {response.status_code}.",
                            param=param,
                        )
                    async for chunk in response.aiter_raw(1024 * 1024):
                        size += len(chunk)
                        if size > limit:
                            raise InvalidInput(
                                f"{param}: the file at {url} is larger than {limit} bytes.",
                                param=param,
                            )
                        digest.update(chunk)
                        handle.write(chunk)
        except httpx.HTTPError as exc:
            path.unlink(missing_ok=True)
            raise InvalidInput(f"{param}: could not fetch {url}: {exc}", param=param) from exc
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        name = sanitize_filename(unquote(urlsplit(url).path.rsplit("/", 1)[-1]))
        try:
            return await self.create(
                account_id,
                Received(path, name, size, digest.hexdigest()),
                source_url=url,
            )
        except (UnsupportedMediaType, InvalidFile) as exc:
            raise InvalidInput(f"{param}: {exc.message}", param=param) from exc


def keep_output(
    storage: Storage, account_id: str, task_id: str, item: dict[str, Any]
) -> StoredFile:
    """Move one output file a handler wrote (``item["path"]``) into the storage, and
    describe it (its expiry is set when the task's outcome is recorded)."""
    path = Path(item.pop("path"))
    record = StoredFile(
        id=new_id("file"),
        account_id=account_id,
        purpose="output",
        filename=sanitize_filename(item.get("name"), "output"),
        content_type=str(item["content_type"]),
        kind=str(item.get("kind") or "file"),
        bytes=int(item["bytes"]),
        sha256=str(item["sha256"]),
        width=item.get("width"),
        height=item.get("height"),
        duration=item.get("duration"),
        task_id=task_id,
        source_url=None,
        created_at=now_us(),
        expires_at=0,
    )
    storage.put_file(record.key, path)
    return record


def output_entry(record: StoredFile) -> dict[str, Any]:
    """An output file as it is listed in ``task.output`` (the presenter adds a fresh
    signed ``url`` and ``url_expires_at`` on every read)."""
    entry: dict[str, Any] = {
        "type": record.kind,
        "file_id": record.id,
        "name": record.filename,
        "content_type": record.content_type,
        "bytes": record.bytes,
        "sha256": record.sha256,
    }
    for name in ("duration", "width", "height"):
        value = getattr(record, name)
        if value is not None:
            entry[name] = value
    entry["expires_at"] = iso(record.expires_at)
    return entry


def _article(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def _is_url(ref: str) -> bool:
    return ref.startswith(("http://", "https://"))


__all__ = [
    "FilePolicy",
    "FileService",
    "Received",
    "decode_cursor",
    "encode_cursor",
    "keep_output",
    "output_entry",
    "sanitize_filename",
]
