"""The two drivers: they perform a plan's effects with ``httpx.Client`` or
``httpx.AsyncClient``. This is the only code that exists twice, once per I/O mode;
it knows nothing of the API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

from taskgate.client._effects import (
    Call,
    CloseStream,
    Effect,
    Emit,
    OpenStream,
    Plan,
    ReadLine,
    Reply,
    Request,
    SaveBody,
    Sleep,
)
from taskgate.client._errors import APIConnectionError
from taskgate.client._saving import Sink

T = TypeVar("T")


@dataclass(frozen=True)
class _Done:
    value: Any


class _Cursor:
    """Steps a plan: hands it the last effect's result (or error) and takes its next
    effect, or its return value once it has finished."""

    def __init__(self, plan: Plan[Any]) -> None:
        self.plan = plan
        self._value: Any = None
        self._error: BaseException | None = None

    def next(self) -> Effect | _Done:
        try:
            if self._error is not None:
                error, self._error = self._error, None
                return self.plan.throw(error)
            value, self._value = self._value, None
            return self.plan.send(value)
        except StopIteration as stop:
            return _Done(stop.value)

    def give(self, value: Any) -> None:
        self._value = value

    def fail(self, exc: httpx.TransportError) -> None:
        error = APIConnectionError(f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc))
        error.__cause__ = exc
        self._error = error


def _build(
    http: httpx.Client | httpx.AsyncClient, request: Request, files: ExitStack
) -> httpx.Request:
    """The httpx request; a multipart body's paths are opened on ``files``, which the
    caller closes once the request has been sent."""
    timeout: Any = httpx.USE_CLIENT_DEFAULT
    if request.read_timeout is not None:
        base = http.timeout
        timeout = httpx.Timeout(
            connect=base.connect, read=request.read_timeout, write=base.write, pool=base.pool
        )
    parts: dict[str, tuple[str, bytes | IO[bytes], str]] | None = None
    if request.files:
        parts = {}
        for name, part in request.files.items():
            content = part.content
            if isinstance(content, Path):
                content = files.enter_context(content.open("rb"))
            parts[name] = (part.filename, content, part.content_type)
    return http.build_request(
        request.method,
        request.path,
        params=dict(request.params) if request.params else None,
        json=request.json,
        files=parts,
        data=dict(request.data) if request.data else None,
        headers=dict(request.headers),
        timeout=timeout,
    )


def _reply(response: httpx.Response, content: bytes, saved: Path | None = None) -> Reply:
    return Reply(response.status_code, response.headers, content, saved)


def _misuse(effect: Emit | _Done) -> TypeError:
    if isinstance(effect, Emit):
        return TypeError("this plan yields values: iterate it")
    return TypeError("this plan returns a value: run it")


class SyncDriver:
    """Runs plans with an ``httpx.Client``."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def run(self, plan: Plan[T]) -> T:
        """Run a plan to its return value."""
        with _SyncRun(self.http, plan) as run:
            step = run.advance()
            if isinstance(step, Emit):
                raise _misuse(step)
            value: T = step.value
            return value

    def iterate(self, plan: Plan[None]) -> Generator[Any, None, None]:
        """Run a plan, yielding the values it emits."""
        with _SyncRun(self.http, plan) as run:
            while isinstance(step := run.advance(), Emit):
                yield step.value


class _SyncRun:
    def __init__(self, http: httpx.Client, plan: Plan[Any]) -> None:
        self.http = http
        self.cursor = _Cursor(plan)
        self.response: httpx.Response | None = None
        self.lines: Iterator[str] | None = None

    def __enter__(self) -> _SyncRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_stream()
        self.cursor.plan.close()

    def advance(self) -> Emit | _Done:
        while True:
            effect = self.cursor.next()
            if isinstance(effect, Emit | _Done):
                return effect
            try:
                self.cursor.give(self.perform(effect))
            except httpx.TransportError as exc:
                self.close_stream()
                self.cursor.fail(exc)

    def perform(self, effect: Effect) -> Any:
        if isinstance(effect, Call):
            with ExitStack() as files:
                response = self.http.send(_build(self.http, effect.request, files))
            return _reply(response, response.content)
        if isinstance(effect, SaveBody):
            return self.save(effect)
        if isinstance(effect, OpenStream):
            self.close_stream()
            with ExitStack() as files:
                response = self.http.send(_build(self.http, effect.request, files), stream=True)
            if response.status_code != 200:
                try:
                    return _reply(response, response.read())
                finally:
                    response.close()
            self.response, self.lines = response, response.iter_lines()
            return _reply(response, b"")
        if isinstance(effect, ReadLine):
            line = next(self.lines, None) if self.lines is not None else None
            if line is None:
                self.close_stream()
            return line
        if isinstance(effect, CloseStream):
            self.close_stream()
            return None
        if isinstance(effect, Sleep):
            time.sleep(max(0.0, effect.seconds))
            return None
        raise TypeError(f"not an effect: {effect!r}")

    def save(self, effect: SaveBody) -> Reply:
        with ExitStack() as files:
            response = self.http.send(_build(self.http, effect.request, files), stream=True)
        try:
            if not response.is_success:
                return _reply(response, response.read())
            with Sink(effect.target, effect.fallback_name, response.headers) as sink:
                for chunk in response.iter_bytes():
                    sink.write(chunk)
            return _reply(response, b"", sink.path)
        finally:
            response.close()

    def close_stream(self) -> None:
        if self.response is not None:
            self.response.close()
        self.response = self.lines = None


class AsyncDriver:
    """Runs plans with an ``httpx.AsyncClient``."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def run(self, plan: Plan[T]) -> T:
        """Run a plan to its return value."""
        run = _AsyncRun(self.http, plan)
        try:
            step = await run.advance()
            if isinstance(step, Emit):
                raise _misuse(step)
            value: T = step.value
            return value
        finally:
            await run.aclose()

    async def iterate(self, plan: Plan[None]) -> AsyncGenerator[Any, None]:
        """Run a plan, yielding the values it emits."""
        run = _AsyncRun(self.http, plan)
        try:
            while isinstance(step := await run.advance(), Emit):
                yield step.value
        finally:
            await run.aclose()


class _AsyncRun:
    def __init__(self, http: httpx.AsyncClient, plan: Plan[Any]) -> None:
        self.http = http
        self.cursor = _Cursor(plan)
        self.response: httpx.Response | None = None
        self.lines: AsyncIterator[str] | None = None

    async def aclose(self) -> None:
        await self.close_stream()
        self.cursor.plan.close()

    async def advance(self) -> Emit | _Done:
        while True:
            effect = self.cursor.next()
            if isinstance(effect, Emit | _Done):
                return effect
            try:
                self.cursor.give(await self.perform(effect))
            except httpx.TransportError as exc:
                await self.close_stream()
                self.cursor.fail(exc)

    async def perform(self, effect: Effect) -> Any:
        if isinstance(effect, Call):
            with ExitStack() as files:
                response = await self.http.send(_build(self.http, effect.request, files))
            return _reply(response, response.content)
        if isinstance(effect, SaveBody):
            return await self.save(effect)
        if isinstance(effect, OpenStream):
            await self.close_stream()
            with ExitStack() as files:
                response = await self.http.send(
                    _build(self.http, effect.request, files), stream=True
                )
            if response.status_code != 200:
                try:
                    return _reply(response, await response.aread())
                finally:
                    await response.aclose()
            self.response, self.lines = response, response.aiter_lines()
            return _reply(response, b"")
        if isinstance(effect, ReadLine):
            line = await anext(self.lines, None) if self.lines is not None else None
            if line is None:
                await self.close_stream()
            return line
        if isinstance(effect, CloseStream):
            await self.close_stream()
            return None
        if isinstance(effect, Sleep):
            await asyncio.sleep(max(0.0, effect.seconds))
            return None
        raise TypeError(f"not an effect: {effect!r}")

    async def save(self, effect: SaveBody) -> Reply:
        # The file is written with blocking calls, a chunk at a time: a local disk
        # keeps up with the network, and it spares a thread per download.
        with ExitStack() as files:
            response = await self.http.send(_build(self.http, effect.request, files), stream=True)
        try:
            if not response.is_success:
                return _reply(response, await response.aread())
            with Sink(effect.target, effect.fallback_name, response.headers) as sink:
                async for chunk in response.aiter_bytes():
                    sink.write(chunk)
            return _reply(response, b"", sink.path)
        finally:
            await response.aclose()

    async def close_stream(self) -> None:
        if self.response is not None:
            await self.response.aclose()
        self.response = self.lines = None
