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
from typing import Any, TypeAlias, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Request:
    """One HTTP request, relative to the client's base URL."""

    method: str
    path: str
    params: Mapping[str, str | int] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Seconds to wait for each read; None: the client's timeout.
    read_timeout: float | None = None


@dataclass(frozen=True)
class Reply:
    """A response: its status, headers (lower-case names) and body."""

    status: int
    headers: Mapping[str, str]
    content: bytes

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


Effect: TypeAlias = Call | OpenStream | ReadLine | CloseStream | Sleep | Emit
Plan: TypeAlias = Generator[Effect, Any, T]
