"""Dependencies of the routes: the services and the calling account.

All are coroutines: FastAPI runs plain-function dependencies in a thread pool,
which would cost more than the work they do. Authenticated routes take one
dependency rather than several, for the same reason: :data:`CallerDep` for routes
without a rate limit, :data:`ReaderDep` or :data:`WriterDep` for the limited ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.responses import Response

from taskgate.api.ratelimits import (
    READS,
    SCOPE_KEY,
    WRITES,
    LimitExceeded,
    Policy,
    Quota,
    RateLimiter,
)
from taskgate.api.responses import task_response
from taskgate.composition import Services
from taskgate.services.accounts import Principal
from taskgate.services.tasks import TaskView


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated request: who calls, and what serves it.

    ``rate_limit_reads`` / ``_writes`` are the account's overrides (None: the server's
    defaults); ``quota`` is where the key stands after a limited route counted this
    request (None on unlimited routes and classes).
    """

    account_id: str
    key_id: str
    services: Services
    base_url: str
    limiter: RateLimiter
    rate_limit_reads: str | None = None
    rate_limit_writes: str | None = None
    quota: Quota | None = None

    def task_response(self, view: TaskView, status: int = 200) -> Response:
        """A task as this caller sees it, with the rate-limit headers."""
        return self.with_limit_headers(
            task_response(view, self.base_url, status, self.services.signer)
        )

    def with_limit_headers(self, response: Response) -> Response:
        """The response, with the ``RateLimit`` headers of this request if it was
        counted."""
        if self.quota is not None:
            response.raw_headers.extend(self.quota.raw_headers())
        return response


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _principal(request: Request) -> Principal:
    header = request.headers.get("authorization")
    token = None
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            token = value.strip()
    services: Services = request.app.state.services
    return await services.accounts.authenticate(token)


def _caller(request: Request, principal: Principal, quota: Quota | None = None) -> Caller:
    state = request.app.state
    return Caller(
        principal.account_id,
        principal.key_id,
        state.services,
        state.base_url,
        state.rate_limiter,
        principal.rate_limit_reads,
        principal.rate_limit_writes,
        quota,
    )


async def get_caller(request: Request) -> Caller:
    """The caller of a route without a rate limit."""
    return _caller(request, await _principal(request))


async def _limited(request: Request, policy: Policy) -> Caller:
    principal = await _principal(request)
    override = principal.rate_limit_reads if policy == READS else principal.rate_limit_writes
    limiter: RateLimiter = request.app.state.rate_limiter
    try:
        quota = await limiter.hit(policy, principal.key_id, override)
    except LimitExceeded as exc:
        request.scope[SCOPE_KEY] = exc.quota
        raise
    if quota is not None:
        # The error handlers put the headers on any error response after this point.
        request.scope[SCOPE_KEY] = quota
    return _caller(request, principal, quota)


async def read_caller(request: Request) -> Caller:
    """The caller of a read route (get, query, list, events), counted against its
    key's ``reads`` limit; 429 ``rate_limited`` over it."""
    return await _limited(request, READS)


async def write_caller(request: Request) -> Caller:
    """The caller of a write route (submit, cancel, delete, uploads), counted against
    its key's ``writes`` limit; 429 ``rate_limited`` over it."""
    return await _limited(request, WRITES)


ServicesDep = Annotated[Services, Depends(get_services)]
CallerDep = Annotated[Caller, Depends(get_caller)]
ReaderDep = Annotated[Caller, Depends(read_caller)]
WriterDep = Annotated[Caller, Depends(write_caller)]
