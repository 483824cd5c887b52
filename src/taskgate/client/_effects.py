"""What a plan asks its driver to do, and what the driver answers.

A *plan* is a generator: it yields effects and receives their results, and its
return value is the operation's result. ``Plan[T]`` plans return a ``T``.
Network failures come back into the plan as a raised :class:`APIConnectionError`
(thrown at the ``yield``), so plans retry with ordinary ``try``/``except``.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeAlias, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class FilePart:
    """A file of a multipart body. A :class:`~pathlib.Path` is opened afresh for each
    attempt, so a request that carries one can be repeated; an open file is sent
    from where it stands."""

    filename: str
    content: bytes | Path | IO[bytes]
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Request:
    """One HTTP request, relative to the client's base URL (or an absolute URL).
    ``json`` is a JSON body; ``files`` and ``data`` a multipart one."""

    method: str
    path: str
    params: Mapping[str, str | int] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Seconds to wait for each read; None: the client's timeout.
    read_timeout: float | None = None
    files: Mapping[str, FilePart] | None = None
    data: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Reply:
    """A response: its status, headers (lower-case names) and body."""

    status: int
    headers: Mapping[str, str]
    content: bytes
    #: Where a :class:`SaveBody` wrote the body (None for an error reply).
    saved: Path | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json_or_none(self) -> Any:
        try:
            return json.loads(self.content)
        except ValueError:
            return None


@dataclass(frozen=True)
class Call:
    """Send a request and read the whole response. Result: :class:`Reply`."""

    request: Request


@dataclass(frozen=True)
class OpenStream:
    """Send a request and keep its body open for :class:`ReadLine` (closing any stream
    the plan had open). Result: :class:`Reply` — with an empty body when the status
    is 200, the whole body otherwise (and then no stream stays open)."""

    request: Request


@dataclass(frozen=True)
class SaveBody:
    """Send a request and write a successful response's body to ``target``: to a
    temporary file beside it, renamed into place once complete, so an interrupted
    download leaves no partial file. When ``target`` is a directory, the file in it
    is named after the response's ``Content-Disposition`` filename (its base name
    only), else after ``fallback_name``. Result: :class:`Reply` with ``saved`` set and
    an empty body, or an error reply with its whole body and nothing written."""

    request: Request
    target: Path
    fallback_name: str


@dataclass(frozen=True)
class ReadLine:
    """The next line of the open stream, without its line ending. Result: ``str``, or
    None once the server has closed the stream."""


@dataclass(frozen=True)
class CloseStream:
    """Close the open stream, if any. Result: None."""


@dataclass(frozen=True)
class Sleep:
    """Wait this many seconds. Result: None."""

    seconds: float


@dataclass(frozen=True)
class Emit:
    """Hand a value to the caller of an iterating operation (``tasks.list``,
    ``tasks.stream``). Result: None."""

    value: Any


Effect: TypeAlias = Call | SaveBody | OpenStream | ReadLine | CloseStream | Sleep | Emit
Plan: TypeAlias = Generator[Effect, Any, T]
