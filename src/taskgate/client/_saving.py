"""Writing a download to disk: beside its target, renamed into place when complete."""

from __future__ import annotations

import email.message
import os
import secrets
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO


def safe_name(name: str | None, fallback: str) -> str:
    """A file name fit for a local directory: the base name of ``name`` without
    control characters or leading dots, else ``fallback`` (cleaned the same way)."""
    for candidate in (name, fallback):
        if not candidate:
            continue
        base = candidate.replace("\\", "/").rsplit("/", 1)[-1]
        base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C")
        base = base.strip().lstrip(".")
        if base:
            return base
    return "download"


def disposition_filename(headers: Mapping[str, str]) -> str | None:
    """The ``filename`` (or RFC 2231 ``filename*``) of a ``Content-Disposition``."""
    value = headers.get("content-disposition")
    if not value:
        return None
    message = email.message.Message()
    message["content-disposition"] = value
    name = message.get_filename()
    return str(name) if name else None


class Sink:
    """A download in progress: written to a hidden temporary file beside its final
    path, renamed into place on a clean exit, removed on an error."""

    def __init__(self, target: Path, fallback_name: str, headers: Mapping[str, str]) -> None:
        if target.is_dir():
            target = target / safe_name(disposition_filename(headers), fallback_name)
        self.path = target
        self._temporary = target.parent / f".{target.name}.{secrets.token_hex(6)}.part"
        # Created as an ordinary file would be (the umask applies), never over another.
        fd = os.open(self._temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        self._file: IO[bytes] = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def __enter__(self) -> Sink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._file.close()
        if exc_type is None:
            os.replace(self._temporary, self.path)
        else:
            self._temporary.unlink(missing_ok=True)
