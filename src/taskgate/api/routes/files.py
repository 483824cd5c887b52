"""``/v1/files``: upload, list, read, download (ranges, signed links), delete.

Uploads and deletions count against the key's ``writes`` limit, reads against
``reads``. A signed link (``?expires=…&signature=…``) opens a file's content
without an API key, like a CDN link, and is not rate limited.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from taskgate.api.deps import ReaderDep, WriterDep, read_caller
from taskgate.api.errors import error_response
from taskgate.api.presenters import file_object
from taskgate.api.responses import ERROR_RESPONSES, json_response
from taskgate.api.uploads import receive_upload
from taskgate.core.clock import MICROS, iso, now_us
from taskgate.core.errors import Gone, InvalidParam
from taskgate.core.models import StoredFile
from taskgate.payloads import DeletedObject, FileObject, FileUrlObject, FileUrlRequest, ListObject
from taskgate.services.storage import BlobNotFound, Storage

router = APIRouter(prefix="/v1/files", tags=["files"], responses=ERROR_RESPONSES)

_UPLOAD_RESPONSES: dict[int | str, dict[str, object]] = {
    413: {"model": None, "description": "Larger than TASKGATE_MAX_UPLOAD_BYTES (`file_too_large`)"},
    415: {"model": None, "description": "Not an accepted type (`unsupported_media_type`)"},
    422: {"model": None, "description": "An accepted type that does not decode (`invalid_file`)"},
}
_CONTENT_RESPONSES: dict[int | str, dict[str, object]] = {
    206: {"description": "The range asked for"},
    403: {"model": None, "description": "`invalid_signature` or `link_expired`"},
    410: {"model": None, "description": "The file expired (`file_expired`)"},
    416: {"model": None, "description": "The range is past the end of the file"},
}


@router.post(
    "",
    status_code=201,
    response_model=FileObject,
    operation_id="upload_file",
    responses=_UPLOAD_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "purpose": {"type": "string", "enum": ["input"]},
                        },
                    }
                }
            },
        }
    },
)
async def upload_file(request: Request, caller: WriterDep) -> Response:
    """Upload an input file (multipart: ``file``, ``purpose=input``). Its type is
    sniffed from its bytes and proven by decoding: PNG, JPEG, WebP, GIF; MP3, WAV,
    FLAC, OGG/Opus, M4A/AAC; MP4, WebM, MOV."""
    files = caller.services.files
    received, fields = await receive_upload(request, files)
    purpose = fields.get("purpose", "input")
    if purpose != "input":
        received.path.unlink(missing_ok=True)
        raise InvalidParam("purpose must be 'input'.", param="purpose")
    record = await files.create(caller.account_id, received)
    return caller.with_limit_headers(json_response(file_object(record), 201))


@router.get("", response_model=ListObject, operation_id="list_files")
async def list_files(
    caller: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    purpose: Annotated[str | None, Query(description="input or output")] = None,
    task_id: Annotated[str | None, Query(description="Outputs of this task")] = None,
) -> Response:
    """The account's files, newest first."""
    found, more, next_cursor = await caller.services.files.list(
        caller.account_id, limit=limit, cursor=cursor, purpose=purpose, task_id=task_id
    )
    now = now_us()
    return caller.with_limit_headers(
        json_response(
            {
                "object": "list",
                "data": [file_object(record, now) for record in found],
                "has_more": more,
                "next_cursor": next_cursor,
            }
        )
    )


@router.get("/{file_id}", response_model=FileObject, operation_id="get_file")
async def get_file(file_id: str, caller: ReaderDep) -> Response:
    record = await caller.services.files.get(caller.account_id, file_id)
    return caller.with_limit_headers(json_response(file_object(record)))


@router.post("/{file_id}/url", response_model=FileUrlObject, operation_id="file_url")
async def file_url(file_id: str, caller: ReaderDep, body: FileUrlRequest | None = None) -> Response:
    """A fresh signed link to the file's content, valid ``expires_in`` seconds (default:
    the server's link TTL) and never past the file's expiry."""
    files = caller.services.files
    record = await files.readable(caller.account_id, file_id)
    path, until = files.link(record, now_us(), body.expires_in if body else None)
    return caller.with_limit_headers(
        json_response({"url": caller.base_url + path, "url_expires_at": iso(until)})
    )


@router.delete("/{file_id}", response_model=DeletedObject, operation_id="delete_file")
async def delete_file(file_id: str, caller: WriterDep) -> Response:
    """Delete a file and its content (409 ``file_in_use`` while a task that is not
    finished uses it)."""
    await caller.services.files.delete(caller.account_id, file_id)
    return caller.with_limit_headers(
        json_response({"id": file_id, "object": "file", "deleted": True})
    )


@router.head("/{file_id}/content", include_in_schema=False)
@router.get(
    "/{file_id}/content",
    operation_id="file_content",
    responses=_CONTENT_RESPONSES,
    response_class=StreamingResponse,
)
async def file_content(
    file_id: str,
    request: Request,
    expires: Annotated[str | None, Query(description="From a signed link")] = None,
    signature: Annotated[str | None, Query(description="From a signed link")] = None,
) -> Response:
    """The file's bytes, with the API key or through a signed link. Serves ``Range``
    requests (one range; 206, or 416 past the end)."""
    files = request.app.state.services.files
    if expires is not None or signature is not None:
        record = await files.readable_by_link(file_id, expires, signature)
        remaining = max(0, int(expires or 0) - now_us() // MICROS)
        cache = f"private, max-age={remaining}"
        caller = None
    else:
        caller = await read_caller(request)
        record = await files.readable(caller.account_id, file_id)
        cache = "private, no-cache"
    response = await _content(request, record, files.storage, cache)
    return caller.with_limit_headers(response) if caller is not None else response


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _requested_range(
    header: str | None, size: int, etag: str, if_range: str | None
) -> tuple[int, int] | None:
    """The one byte range asked for, as (first, last); None for the whole file (no
    Range header, one that is malformed or names several ranges, or an If-Range
    that no longer matches). Raises for an unsatisfiable range."""
    if header is None or (if_range is not None and if_range.strip() != etag):
        return None
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return None
    if not first_text:
        length = int(last_text)
        if length == 0 or size == 0:
            raise _Unsatisfiable
        return max(0, size - length), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # not a valid range: ignored
    if first >= size:
        raise _Unsatisfiable
    last = int(last_text) if last_text else size - 1
    return first, min(last, size - 1)


class _Unsatisfiable(Exception):
    pass


def _disposition(filename: str) -> str:
    ascii_name = filename.encode("ascii", "ignore").decode().replace('"', "").replace("\\", "")
    return f"inline; filename=\"{ascii_name or 'file'}\"; filename*=UTF-8''{quote(filename)}"


async def _content(request: Request, record: StoredFile, storage: Storage, cache: str) -> Response:
    etag = f'"{record.sha256}"'
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Content-Disposition": _disposition(record.filename),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": cache,
    }
    size = record.bytes
    try:
        wanted = _requested_range(
            request.headers.get("range"), size, etag, request.headers.get("if-range")
        )
    except _Unsatisfiable:
        return error_response(
            416,
            "invalid_param",
            f"The range is past the end of the file ({size} bytes).",
            param="Range",
            details={"size": size},
            headers={"Content-Range": f"bytes */{size}"},
        )
    if request.headers.get("if-none-match") == etag and wanted is None:
        return Response(status_code=304, headers=headers)
    first, last = wanted if wanted is not None else (0, size - 1)
    status = 206 if wanted is not None else 200
    if wanted is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(max(0, last - first + 1))
    if request.method == "HEAD" or size == 0:
        return Response(status_code=status, headers=headers, media_type=record.content_type)
    try:
        chunks: Iterator[bytes] = await run_in_threadpool(storage.read, record.key, first, last)
    except BlobNotFound:
        raise Gone("The file's content is gone.") from None
    return StreamingResponse(
        chunks, status_code=status, headers=headers, media_type=record.content_type
    )
