"""``/v1/admin``: accounts, keys, credits and limits, for deployments with many nodes.

Mounted only when ``TASKGATE_ADMIN_TOKEN`` is set (otherwise every admin route is
an unknown route: 404), and authenticated by that token as a bearer. The account
services are synchronous (the CLI shares them), so these routes are plain
functions, which FastAPI runs in its thread pool.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from taskgate.api.presenters import account_object, key_object
from taskgate.api.responses import ERROR_RESPONSES, json_response
from taskgate.composition import Services
from taskgate.core.errors import InvalidInput, InvalidParam, Unauthenticated
from taskgate.payloads import (
    AccountObject,
    AdminAccountCreate,
    AdminAccountUpdate,
    AdminGrant,
    KeyObject,
    ListObject,
)
from taskgate.services.accounts import UNCHANGED
from taskgate.services.tasks import MAX_PAGE


def _admin(request: Request) -> Services:
    services: Services = request.app.state.services
    token = services.settings.admin_token
    assert token, "the admin router is mounted only with an admin token"
    scheme, _, value = (request.headers.get("authorization") or "").partition(" ")
    given = value.strip() if scheme.lower() == "bearer" else ""
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthenticated("Missing or wrong admin token.")
    return services


Admin = Annotated[Services, Depends(_admin)]

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=ERROR_RESPONSES)


@router.post("/accounts", status_code=201, response_model=AccountObject)
def create_account(body: AdminAccountCreate, services: Admin) -> Response:
    """Create an account, with credits and limits."""
    created = services.accounts.create_account(
        body.name,
        credits=body.credits,
        concurrency=body.concurrency,
        rate_limit_reads=body.rate_limit_reads,
        rate_limit_writes=body.rate_limit_writes,
    )
    return json_response(account_object(created), 201)


@router.get("/accounts", response_model=ListObject)
def list_accounts(
    services: Admin,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Response:
    """Accounts, oldest first."""
    if cursor is not None and not cursor.startswith("acct_"):
        raise InvalidParam("Not a cursor from this list.", param="cursor")
    page = services.accounts.list_accounts(limit=limit + 1, after_id=cursor)
    more = len(page) > limit
    page = page[:limit]
    return json_response(
        {
            "object": "list",
            "data": [account_object(account) for account in page],
            "has_more": more,
            "next_cursor": page[-1].id if more else None,
        }
    )


@router.get("/accounts/{account}", response_model=AccountObject)
def get_account(account: str, services: Admin) -> Response:
    """An account by id or name."""
    return json_response(account_object(services.accounts.find_account(account)))


@router.patch("/accounts/{account}", response_model=AccountObject)
def update_account(account: str, body: AdminAccountUpdate, services: Admin) -> Response:
    """Change the concurrency limit or the rate limits; a rate limit set to null goes
    back to the server's default."""
    given = body.model_fields_set
    if "concurrency" in given and body.concurrency is None:
        raise InvalidInput("concurrency cannot be null.", param="concurrency")
    changes: dict[str, Any] = {
        name: getattr(body, name) if name in given else UNCHANGED
        for name in ("rate_limit_reads", "rate_limit_writes", "output_retention_seconds")
    }
    updated = services.accounts.update_limits(account, concurrency=body.concurrency, **changes)
    return json_response(account_object(updated))


@router.post("/accounts/{account}/credits", status_code=201, response_model=AccountObject)
def grant_credits(account: str, body: AdminGrant, services: Admin) -> Response:
    """Grant credits (a ledger entry); returns the account with its new balance."""
    balance = services.billing.grant(account, body.amount, body.note)
    return json_response(account_object(balance.account), 201)


@router.post("/accounts/{account}/keys", status_code=201, response_model=KeyObject)
def create_key(account: str, services: Admin) -> Response:
    """A new API key. The key itself is in this response only."""
    key, plaintext = services.accounts.create_key(account)
    return json_response(key_object(key, plaintext), 201)


@router.get("/accounts/{account}/keys", response_model=ListObject)
def list_keys(account: str, services: Admin) -> Response:
    keys = services.accounts.list_keys(account)
    return json_response(
        {
            "object": "list",
            "data": [key_object(key) for key in keys],
            "has_more": False,
            "next_cursor": None,
        }
    )


@router.delete("/keys/{key_id}", response_model=KeyObject)
def revoke_key(key_id: str, services: Admin) -> Response:
    """Revoke a key by its id; it stops working at once."""
    if not key_id.startswith("key_"):
        raise InvalidParam("Give the key's id (key_…).", param="key_id")
    return json_response(key_object(services.accounts.revoke_key(key_id)))
