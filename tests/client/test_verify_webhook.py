"""``verify_webhook``: Standard Webhooks signatures checked against vectors signed
here with hmac and base64 (themselves pinned to the specification's example), and
every way a delivery can be wrong raising the one error."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import pytest

from taskgate.client import WebhookEvent, WebhookVerificationError, verify_webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_" + base64.b64encode(b"another secret of 32 bytes......").decode()


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """A ``v1,`` signature computed from the specification, not by the library."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def test_the_signer_matches_the_specification_example() -> None:
    # The example of the Standard Webhooks specification and its libraries.
    signature = sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


EVENT_ID = "evt_01J00000000000000000000000"
EVENT = {
    "id": EVENT_ID,
    "type": "webhook.test",
    "created_at": "2026-01-01T00:00:00.000000Z",
    "data": {"webhook_id": "we_1"},
}
BODY = json.dumps(EVENT)


def headers(
    body: str = BODY, *, secrets: tuple[str, ...] = (SECRET,), skew: float = 0
) -> dict[str, str]:
    stamp = int(time.time() + skew)
    return {
        "Webhook-Id": EVENT_ID,  # any case
        "webhook-timestamp": str(stamp),
        "webhook-signature": " ".join(sign(s, EVENT_ID, stamp, body) for s in secrets),
    }


def test_a_good_delivery_gives_its_event() -> None:
    event = verify_webhook(BODY.encode(), headers(), SECRET)
    assert isinstance(event, WebhookEvent)
    assert (event.id, event.type, event.data) == (EVENT["id"], "webhook.test", EVENT["data"])
    assert event.task is None
    # A str body, and a secret without its prefix, do as well.
    assert verify_webhook(BODY, headers(), SECRET.removeprefix("whsec_")).id == EVENT["id"]


def test_one_matching_signature_among_several_is_enough() -> None:
    both = headers(secrets=(OTHER_SECRET, SECRET))
    assert verify_webhook(BODY, both, SECRET).id == EVENT["id"]
    assert verify_webhook(BODY, both, OTHER_SECRET).id == EVENT["id"]
    # Other versions of signature are skipped.
    mixed = headers()
    mixed["webhook-signature"] = "v2,AAAA " + mixed["webhook-signature"]
    assert verify_webhook(BODY, mixed, SECRET).id == EVENT["id"]


def _tampered(name: str, value: str) -> Callable[[], dict[str, str]]:
    def make() -> dict[str, str]:
        found = headers()
        found[name] = value
        return found

    return make


def _signed(body: str = BODY, skew: float = 0) -> Callable[[], dict[str, str]]:
    # Headers are made when the test runs: timestamps are relative to that moment.
    return lambda: headers(body, skew=skew)


@pytest.mark.parametrize(
    ("body", "given", "secret"),
    [
        pytest.param(BODY, _signed(), OTHER_SECRET, id="wrong secret"),
        pytest.param(BODY.replace("we_1", "we_2"), _signed(), SECRET, id="tampered body"),
        pytest.param(BODY, _tampered("Webhook-Id", "evt_other"), SECRET, id="other id"),
        pytest.param(BODY, _signed(skew=-310), SECRET, id="stale timestamp"),
        pytest.param(BODY, _signed(skew=310), SECRET, id="future timestamp"),
        pytest.param(BODY, _tampered("webhook-timestamp", "soon"), SECRET, id="bad timestamp"),
        pytest.param(BODY, lambda: {"webhook-id": "evt_1"}, SECRET, id="missing headers"),
        pytest.param(BODY, _tampered("webhook-signature", "v1"), SECRET, id="no comma"),
        pytest.param(BODY, _tampered("webhook-signature", "v1,***"), SECRET, id="not base64"),
        pytest.param(BODY, _tampered("webhook-signature", "v1,a,b"), SECRET, id="two commas"),
        pytest.param(BODY, _tampered("webhook-signature", ""), SECRET, id="empty signature"),
        pytest.param(BODY, _signed(), "whsec_", id="empty secret"),
        pytest.param(BODY, _signed(), "whsec_@@@@", id="secret not base64"),
        pytest.param(b"\xff\xfe", _signed("\xff\xfe"), SECRET, id="not UTF-8"),
    ],
)
def test_every_bad_delivery_raises_the_one_error(
    body: str | bytes, given: Callable[[], dict[str, str]], secret: str
) -> None:
    made = given()
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, made, secret)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("not json", id="not JSON"),
        pytest.param("[1, 2]", id="not an object"),
        pytest.param('{"id": "evt_1"}', id="not an event"),
    ],
)
def test_a_signed_body_that_is_not_an_event_raises_the_one_error(body: str) -> None:
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, headers(body), SECRET)
