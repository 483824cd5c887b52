"""Receiving a multipart upload: streamed to a scratch file, counted and hashed on
the way, refused as soon as it passes the size limit.

python-multipart parses the body as it arrives; the ``file`` part goes straight to
a scratch file of the storage (no second copy), the other parts are small fields.
Hashing and writing run on a thread, one batch at a time while the event loop
parses the next (both release the GIL), so the two overlap on two cores. Whatever
goes wrong, the scratch file is removed before the error leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from taskgate.core.errors import FileTooLarge, InvalidParam
from taskgate.services.files import FileService, Received, sanitize_filename

#: Room for the multipart framing and the small fields, over the file size limit.
FRAMING_BYTES = 64 * 1024
MAX_FIELD_BYTES = 1024
MAX_PARTS = 8
#: File bytes handed to the writer thread at a time.
WRITE_BATCH_BYTES = 1024 * 1024
FILE_PART = "file"
FIELDS = frozenset({"purpose"})


@dataclass
class _Part:
    name: str | None = None
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)


class _Receiver:
    """python-multipart callbacks that write the file part to a scratch file."""

    def __init__(self, files: FileService, limit: int) -> None:
        self.files = files
        self.limit = limit
        self.fields: dict[str, str] = {}
        self.path: Path | None = None
        self.handle: Any = None
        self.digest = hashlib.sha256()
        self.size = 0
        self.filename: str | None = None
        self.parts = 0
        self._part = _Part()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._in_file = False
        self.file_complete = False
        # File bytes parsed but not yet written, and the batch being written.
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._writing: asyncio.Future[None] | None = None

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise InvalidParam(f"An upload has at most {MAX_PARTS} parts.")
        self._part = _Part()
        self._headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        filename = options.get(b"filename")
        self._part.name = name.decode("utf-8", "replace") if name is not None else None
        self._part.filename = filename.decode("utf-8", "replace") if filename is not None else None
        self._in_file = self._part.name == FILE_PART
        if self._in_file:
            if self.path is not None:
                raise InvalidParam("Send one file per upload.", param=FILE_PART)
            self.filename = self._part.filename
            self.path, self.handle = self.files.spool()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.size += end - start
            if self.size > self.limit:
                raise FileTooLarge(f"The file is larger than {self.limit} bytes.", param=FILE_PART)
            self._pending.append(data[start:end])
            self._pending_bytes += end - start
            return
        self._part.data += data[start:end]
        if len(self._part.data) > MAX_FIELD_BYTES:
            raise InvalidParam(
                f"A form field is at most {MAX_FIELD_BYTES} bytes.", param=self._part.name
            )

    def on_part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self.file_complete = True
            return
        name = self._part.name
        if name is None:
            raise InvalidParam("A form part has no name.")
        if name not in FIELDS:
            raise InvalidParam(f"Unknown form field {name!r}.", param=name)
        self.fields[name] = self._part.data.decode("utf-8", "replace")

    def _write(self, blocks: list[bytes]) -> None:
        for block in blocks:
            self.digest.update(block)
            self.handle.write(block)

    async def flush(self, *, at_least: int = WRITE_BATCH_BYTES) -> None:
        """Hand the parsed file bytes to the writer thread once ``at_least`` are
        waiting; the previous batch is finished first, so bytes stay in order."""
        if self._pending_bytes < at_least or not self._pending:
            return
        if self._writing is not None:
            await self._writing
        blocks, self._pending, self._pending_bytes = self._pending, [], 0
        self._writing = asyncio.get_running_loop().run_in_executor(None, self._write, blocks)

    async def finish(self) -> None:
        """Write what is left and close the scratch file."""
        await self.flush(at_least=0)
        if self._writing is not None:
            await self._writing
            self._writing = None
        if self.handle is not None:
            self.handle.close()

    async def discard(self) -> None:
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writing)
        if self.handle is not None:
            self.handle.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


async def receive_upload(request: Request, files: FileService) -> tuple[Received, dict[str, str]]:
    """Stream a ``multipart/form-data`` upload into a scratch file; returns it with the
    form's other fields. 413 ``file_too_large`` as soon as the file passes the limit
    (or at once when Content-Length says it will), nothing kept."""
    limit = files.policy.max_upload_bytes
    content_type, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidParam(
            "Upload a file as multipart/form-data with a 'file' part.", param=FILE_PART
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit + FRAMING_BYTES:
        raise FileTooLarge(f"The file is larger than {limit} bytes.", param=FILE_PART)
    receiver = _Receiver(files, limit)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": receiver.on_part_begin,
            "on_part_data": receiver.on_part_data,
            "on_part_end": receiver.on_part_end,
            "on_header_field": receiver.on_header_field,
            "on_header_value": receiver.on_header_value,
            "on_header_end": receiver.on_header_end,
            "on_headers_finished": receiver.on_headers_finished,
        },
    )
    try:
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
                await receiver.flush()
        parser.finalize()
        if receiver.path is None or not receiver.file_complete:
            raise InvalidParam("The upload has no complete 'file' part.", param=FILE_PART)
        await receiver.finish()
    except MultipartParseError as exc:
        await receiver.discard()
        raise InvalidParam(f"The multipart body is malformed: {exc}", param=FILE_PART) from exc
    except BaseException:
        await receiver.discard()
        raise
    name = sanitize_filename(receiver.filename)
    received = Received(receiver.path, name, receiver.size, receiver.digest.hexdigest())
    return received, receiver.fields
