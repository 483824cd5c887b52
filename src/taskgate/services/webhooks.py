"""Webhook endpoints of an account: create, read, change, delete, rotate the secret.

Secrets follow Standard Webhooks (``whsec_`` + base64 of 32 random bytes). A URL is
checked by the SSRF guard when it is saved; the delivery checks the address it
connects to again.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from typing import Any

from taskgate.core.clock import MICROS, now_us
from taskgate.core.errors import InvalidInput, InvalidParam, WebhookNotFound
from taskgate.core.ids import new_id
from taskgate.core.models import WebhookEndpoint
from taskgate.core.states import EventType
from taskgate.services.netguard import Resolver, check_url
from taskgate.services.tasks import MAX_PAGE
from taskgate.store import deliveries as deliveries_repo
from taskgate.store import webhooks as repo
from taskgate.store.db import Conn, Database

#: Every event type an endpoint can receive.
EVENT_TYPES: tuple[str, ...] = tuple(str(kind) for kind in EventType)
#: What a new endpoint receives unless told: everything but progress.
DEFAULT_EVENTS: tuple[str, ...] = tuple(t for t in EVENT_TYPES if t != EventType.PROGRESS)
#: After a rotation, deliveries carry signatures of both secrets for this long.
PREVIOUS_SECRET_US = 24 * 3600 * MICROS
MAX_URL_CHARS = 2048
_SECRET_BYTES = 32


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


def check_events(events: Sequence[str]) -> list[str]:
    """A list of known event types, without repeats, in the order given."""
    if not events:
        raise InvalidInput("Give at least one event type.", param="enabled_events")
    unknown = [kind for kind in events if kind not in EVENT_TYPES]
    if unknown:
        raise InvalidInput(
            f"Unknown event types {unknown}; known: {list(EVENT_TYPES)}.",
            param="enabled_events",
        )
    return list(dict.fromkeys(events))


class WebhookService:
    def __init__(
        self, db: Database, *, allow_private_urls: bool, resolve: Resolver | None = None
    ) -> None:
        self._db = db
        self._allow_private = allow_private_urls
        self._resolve = resolve

    async def _check_url(self, url: str) -> str:
        checked = await check_url(
            url, allow_private=self._allow_private, resolve=self._resolve, param="url"
        )
        if len(checked) > MAX_URL_CHARS:
            raise InvalidInput(
                f"The URL is longer than {MAX_URL_CHARS} characters once encoded.", param="url"
            )
        return checked

    async def create(
        self,
        account_id: str,
        *,
        url: str,
        description: str | None = None,
        enabled_events: Sequence[str] | None = None,
    ) -> WebhookEndpoint:
        events = check_events(enabled_events) if enabled_events is not None else DEFAULT_EVENTS
        now = now_us()
        endpoint = WebhookEndpoint(
            id=new_id("we"),
            account_id=account_id,
            url=await self._check_url(url),
            description=description,
            enabled_events=list(events),
            status="enabled",
            disabled_reason=None,
            secret=new_secret(),
            previous_secret=None,
            previous_secret_expires_at=None,
            failing_since=None,
            created_at=now,
            updated_at=now,
        )
        await self._db.write(lambda conn: repo.insert_endpoint(conn, endpoint))
        return endpoint

    async def get(self, account_id: str, endpoint_id: str) -> WebhookEndpoint:
        found = await self._db.read(lambda conn: repo.get(conn, account_id, endpoint_id))
        if found is None:
            raise WebhookNotFound(endpoint_id)
        return found

    async def list(
        self, account_id: str, *, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[WebhookEndpoint], bool]:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidParam(f"limit is 1–{MAX_PAGE}.", param="limit")
        if cursor is not None and not cursor.startswith("we_"):
            raise InvalidParam("Not a cursor from this list.", param="cursor")
        return await self._db.read(
            lambda conn: repo.list_page(conn, account_id, limit=limit, before_id=cursor)
        )

    async def update(
        self, account_id: str, endpoint_id: str, changes: dict[str, Any]
    ) -> WebhookEndpoint:
        """Change url, description, enabled_events or status (``enabled`` /
        ``disabled``); a key left out stays as it is. Enabling clears the reason
        the server disabled it and its run of failures."""
        values: dict[str, Any] = {}
        if "url" in changes:
            values["url"] = await self._check_url(changes["url"])
        if "description" in changes:
            values["description"] = changes["description"]
        if "enabled_events" in changes:
            values["enabled_events"] = check_events(changes["enabled_events"])
        if "status" in changes:
            status = changes["status"]
            if status not in ("enabled", "disabled"):
                raise InvalidInput("status is enabled or disabled.", param="status")
            values.update(status=status, disabled_reason=None, failing_since=None)

        def write(conn: Conn) -> WebhookEndpoint:
            if repo.get(conn, account_id, endpoint_id) is None:
                raise WebhookNotFound(endpoint_id)
            if values:
                repo.change(conn, endpoint_id, {**values, "updated_at": now_us()})
            found = repo.get(conn, account_id, endpoint_id)
            assert found is not None
            return found

        return await self._db.write(write)

    async def delete(self, account_id: str, endpoint_id: str) -> None:
        def write(conn: Conn) -> None:
            if repo.get(conn, account_id, endpoint_id) is None:
                raise WebhookNotFound(endpoint_id)
            deliveries_repo.remove_for_endpoint(conn, endpoint_id)
            repo.remove(conn, endpoint_id)

        await self._db.write(write)

    async def rotate_secret(self, account_id: str, endpoint_id: str) -> WebhookEndpoint:
        """A new secret; the old one keeps signing deliveries (beside the new one)
        for 24 hours, so receivers can switch without losing any."""

        def write(conn: Conn) -> WebhookEndpoint:
            found = repo.get(conn, account_id, endpoint_id)
            if found is None:
                raise WebhookNotFound(endpoint_id)
            now = now_us()
            repo.change(
                conn,
                endpoint_id,
                {
                    "secret": new_secret(),
                    "previous_secret": found.secret,
                    "previous_secret_expires_at": now + PREVIOUS_SECRET_US,
                    "updated_at": now,
                },
            )
            rotated = repo.get(conn, account_id, endpoint_id)
            assert rotated is not None
            return rotated

        return await self._db.write(write)
