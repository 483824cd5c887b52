"""``Client`` and ``AsyncClient``: an httpx client, a driver, and the resources."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import TracebackType

import httpx

from taskgate import __version__
from taskgate.client._config import Config, resolve_api_key, resolve_base_url
from taskgate.client._drivers import AsyncDriver, SyncDriver
from taskgate.client._surface import _BaseClient

DEFAULT_TIMEOUT = 30.0


def _headers(api_key: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    headers = {"User-Agent": f"taskgate-python/{__version__}", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    headers.update(extra or {})
    return headers


def _config(config: Config | None, max_retries: int | None) -> Config:
    config = config or Config()
    if max_retries is not None:
        config = dataclasses.replace(config, max_retries=max_retries)
    return config


class Client(_BaseClient[SyncDriver]):
    """The taskgate API, blocking.

    ``base_url`` defaults to ``TASKGATE_BASE_URL`` (else ``http://127.0.0.1:8000``),
    ``api_key`` to ``TASKGATE_API_KEY``. ``timeout`` bounds each request's connect,
    read and write (event streams read with ``config.stream_read_timeout``);
    ``max_retries`` overrides ``config.max_retries``. ``transport`` is passed to
    httpx (e.g. ``httpx.MockTransport`` in tests). Close it, or use it as a context
    manager.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int | None = None,
        config: Config | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = resolve_base_url(base_url)
        self._http = httpx.Client(
            base_url=url,
            headers=_headers(resolve_api_key(api_key), headers),
            timeout=timeout,
            transport=transport,
        )
        super().__init__(SyncDriver(self._http), _config(config, max_retries), url)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(_BaseClient[AsyncDriver]):
    """The taskgate API for asyncio: the same methods as :class:`Client`, awaited
    (``tasks.list`` and ``tasks.stream`` are async iterators)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int | None = None,
        config: Config | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url = resolve_base_url(base_url)
        self._http = httpx.AsyncClient(
            base_url=url,
            headers=_headers(resolve_api_key(api_key), headers),
            timeout=timeout,
            transport=transport,
        )
        super().__init__(AsyncDriver(self._http), _config(config, max_retries), url)

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
