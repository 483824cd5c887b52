"""Checking that a webhook delivery came from taskgate (Standard Webhooks signatures)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from standardwebhooks import Webhook
from standardwebhooks import WebhookVerificationError as _LibraryError

from taskgate.client._errors import TaskgateError
from taskgate.payloads import TaskObject

#: A delivery's timestamp may be this far from the receiver's clock (the
#: ``standardwebhooks`` package's tolerance).
TOLERANCE_SECONDS = 300


class WebhookVerificationError(TaskgateError):
    """A webhook delivery failed verification: a signature header is missing or
    malformed, its timestamp is more than five minutes off, no signature matches the
    secret, or the secret itself is malformed. Answer such a request with a 4xx and
    do not act on it."""


class WebhookEvent(BaseModel):
    """A verified webhook delivery: ``{id: evt_…, type, created_at, data}``. ``data``
    is the task object for ``task.*`` events (see :attr:`task`)."""

    model_config = ConfigDict(extra="allow")

    id: str
    type: str
    created_at: str
    data: dict[str, Any]

    @property
    def task(self) -> TaskObject | None:
        """The task this event reports, for ``task.*`` events; None otherwise."""
        if not self.type.startswith("task."):
            return None
        return TaskObject.model_validate(self.data)


def verify_webhook(payload: bytes | str, headers: Mapping[str, str], secret: str) -> WebhookEvent:
    """Verify a delivery and return its event.

    ``payload`` is the request body exactly as received (not re-serialised JSON),
    ``headers`` its headers (any case: ``webhook-id``, ``webhook-timestamp``,
    ``webhook-signature``), ``secret`` the endpoint's ``whsec_…`` secret. A delivery
    may carry several signatures (for a day after a secret rotation, one per
    secret): one that matches is enough. Every reason to reject it raises
    :class:`WebhookVerificationError`.
    """
    lowered = {str(name).lower(): str(value) for name, value in headers.items()}
    try:
        body = payload if isinstance(payload, str) else payload.decode("utf-8")
        verifier = Webhook(secret)
        parsed = verifier.verify(body, lowered)
    except _LibraryError as exc:
        raise WebhookVerificationError(str(exc)) from exc
    # The package raises bare exceptions on malformed input: a secret or signature
    # that is not base64 (binascii.Error, a ValueError), a signature without its
    # ``v1,`` version, an empty secret; and the body may not be UTF-8 or JSON.
    except Exception as exc:
        raise WebhookVerificationError(
            f"malformed delivery or secret ({type(exc).__name__}: {exc})"
        ) from exc
    try:
        return WebhookEvent.model_validate(parsed)
    except ValidationError as exc:
        raise WebhookVerificationError(f"the payload is not a taskgate event: {exc}") from exc
