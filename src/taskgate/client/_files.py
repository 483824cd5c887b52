"""The file operations, as plans (see ``_effects``)."""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path
from typing import IO
from urllib.parse import quote

from taskgate.client._effects import FilePart, Plan, Request, SaveBody
from taskgate.client._plans import Ctx, paged, send
from taskgate.payloads import DeletedObject, FileObject, FileUrlObject


def file_path(file_id: str, *rest: str) -> str:
    return "/".join(["/v1/files", quote(file_id, safe=""), *rest])


def upload_file(
    ctx: Ctx,
    file: str | os.PathLike[str] | bytes | IO[bytes],
    *,
    filename: str | None = None,
    purpose: str = "input",
) -> Plan[FileObject]:
    """Upload a workflow input: a path, the bytes themselves, or a binary file open
    for reading. Its ``id`` (``file_…``) goes in a task's input. The server decides
    the type from the content (images, audio, video); ``filename`` defaults to the
    path's name. A path or bytes are sent again after a 429 or 503; nothing is
    retried after a network error."""
    content: bytes | Path | IO[bytes]
    if isinstance(file, bytes):
        content, default_name = file, "upload"
    elif isinstance(file, str | os.PathLike):
        content = Path(file)
        default_name = content.name
        if not content.is_file():
            raise FileNotFoundError(f"no such file: {content}")
    else:
        content, default_name = file, Path(str(getattr(file, "name", "upload"))).name
    name = filename or default_name
    guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
    request = Request(
        "POST",
        "/v1/files",
        files={"file": FilePart(name, content, guessed)},
        data={"purpose": purpose},
    )
    # An open file is read as it is sent: it can be sent only once.
    retries = 0 if not isinstance(content, bytes | Path) else None
    reply = yield from send(ctx.config, request, retries=retries, repeatable=False)
    return FileObject.model_validate_json(reply.content)


def get_file(ctx: Ctx, file_id: str) -> Plan[FileObject]:
    """A file's description; :class:`NotFoundError` (``file_not_found``) if none."""
    reply = yield from send(ctx.config, Request("GET", file_path(file_id)))
    return FileObject.model_validate_json(reply.content)


def list_files(ctx: Ctx, *, purpose: str | None = None, limit: int | None = None) -> Plan[None]:
    """The account's files, newest first, fetched a page at a time; ``purpose``:
    ``input`` or ``output``."""
    params: dict[str, str | int] = {}
    if purpose is not None:
        params["purpose"] = purpose
    if limit is not None:
        params["limit"] = limit
    return (yield from paged(ctx.config, "/v1/files", params, FileObject))


def download_file(ctx: Ctx, file_id: str, to: str | os.PathLike[str] = ".") -> Plan[Path]:
    """Save a file's content and return the path written. ``to`` is a file path, or
    a directory (default: the current one) in which the file keeps the name the
    server gives it. The file appears whole or not at all. An expired output raises
    an :class:`APIError` ``file_expired`` (410)."""
    effect = SaveBody(Request("GET", file_path(file_id, "content")), Path(to), file_id)
    reply = yield from send(ctx.config, effect)
    assert reply.saved is not None
    return reply.saved


def file_url(ctx: Ctx, file_id: str, *, expires_in: int | None = None) -> Plan[FileUrlObject]:
    """A fresh signed link to the content that works without an API key (``url``,
    ``url_expires_at``), valid ``expires_in`` seconds (default: the server's link
    lifetime; never past the file's expiry)."""
    body = {} if expires_in is None else {"expires_in": expires_in}
    reply = yield from send(ctx.config, Request("POST", file_path(file_id, "url"), json=body))
    return FileUrlObject.model_validate_json(reply.content)


def delete_file(ctx: Ctx, file_id: str) -> Plan[DeletedObject]:
    """Delete a file; :class:`ConflictError` (``file_in_use``) while a task that is
    not over uses it."""
    reply = yield from send(ctx.config, Request("DELETE", file_path(file_id)), repeatable=False)
    return DeletedObject.model_validate_json(reply.content)
