"""Dependencies of the routes: the services and the calling account."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from taskgate.composition import Services
from taskgate.services.accounts import Principal


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_base_url(request: Request) -> str:
    base: str = request.app.state.base_url
    return base


async def get_principal(request: Request) -> Principal:
    header = request.headers.get("authorization")
    token = None
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            token = value.strip()
    return await get_services(request).accounts.authenticate(token)


ServicesDep = Annotated[Services, Depends(get_services)]
BaseUrl = Annotated[str, Depends(get_base_url)]
Auth = Annotated[Principal, Depends(get_principal)]
