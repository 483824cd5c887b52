"""Dependencies of the routes: the services and the calling account.

All are coroutines: FastAPI runs plain-function dependencies in a thread pool,
which would cost more than the work they do. Authenticated routes take one
dependency, :data:`CallerDep`, rather than several, for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from taskgate.composition import Services


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated request: who calls, and what serves it."""

    account_id: str
    key_id: str
    services: Services
    base_url: str


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_caller(request: Request) -> Caller:
    header = request.headers.get("authorization")
    token = None
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            token = value.strip()
    services: Services = request.app.state.services
    principal = await services.accounts.authenticate(token)
    return Caller(principal.account_id, principal.key_id, services, request.app.state.base_url)


ServicesDep = Annotated[Services, Depends(get_services)]
CallerDep = Annotated[Caller, Depends(get_caller)]
