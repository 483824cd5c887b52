"""Signed, expiring tokens: the secret key, and what it signs.

The key is ``TASKGATE_SECRET_KEY``, or (embedded mode) a random key generated into
the data dir on first use and kept there. With PostgreSQL every node must sign
with the same key, so nodes refuse to start without the setting
(:func:`require_secret_key`). Tokens are itsdangerous' URL-safe timed
signatures, one salt per purpose, so a token made for one purpose is refused by
every other.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from taskgate.core.errors import Unauthenticated
from taskgate.settings import Settings

SECRET_FILE = "secret_key"
#: How long a task's event-stream token (in ``links.events``) lets a browser in.
STREAM_TOKEN_SECONDS = 15 * 60
# A task's token is made once per this many seconds and reused meanwhile, so
# every token handed out is valid for at least STREAM_TOKEN_SECONDS − this.
_STREAM_TOKEN_REUSE_SECONDS = 5 * 60


class MissingSecretKey(Exception):
    """A node of a PostgreSQL deployment was started without the shared key."""


def require_secret_key(settings: Settings) -> None:
    """Refuse to run a node (``serve``, ``worker``) of a PostgreSQL deployment
    without ``TASKGATE_SECRET_KEY``: a key of its own would sign links and stream
    tokens that the other nodes refuse."""
    if not settings.is_sqlite and not (settings.secret_key or "").strip():
        raise MissingSecretKey(
            "TASKGATE_SECRET_KEY is required with PostgreSQL: set the same secret on every "
            "node of the deployment (for example the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`)."
        )


def load_secret(settings: Settings) -> str:
    """The configured secret key, or the data dir's own (made on first use).

    With PostgreSQL and no key (an administrative command such as ``taskgate
    accounts create``, which signs nothing; nodes check :func:`require_secret_key`
    first), a random key for this process only: nothing is written to a data dir
    that the deployment does not share.
    """
    if settings.secret_key:
        return settings.secret_key
    if not settings.is_sqlite:
        return secrets.token_urlsafe(48)
    path = settings.data_dir / SECRET_FILE
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    candidate = secrets.token_urlsafe(48)
    try:
        # O_EXCL: of two processes starting together, one writes and both read it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_when_written(path)
    with os.fdopen(fd, "w") as out:
        out.write(candidate)
    return candidate


def _read_when_written(path: Path) -> str:
    # The process that created the file writes it at once; give it a second.
    for _ in range(100):
        if value := path.read_text().strip():
            return value
        time.sleep(0.01)
    raise RuntimeError(f"the secret key file {path} is empty")


class Signer:
    """Signs and checks stream tokens and file links.

    ``file_link_ttl_us``: how long a file link made by :meth:`file_link` lives
    (None: as long as the file)."""

    def __init__(self, secret: str, *, file_link_ttl_us: int | None = None) -> None:
        self.file_link_ttl_us = file_link_ttl_us
        self._streams = URLSafeTimedSerializer(secret, salt="taskgate.stream")
        self._stream_token = lru_cache(maxsize=8192)(self._make_stream_token)
        # Signed file links use their own key, derived from the secret.
        self._file_key = hmac.new(secret.encode(), b"taskgate.files", hashlib.sha256).digest()

    def stream_token(self, account_id: str, task_id: str, now_seconds: float) -> str:
        """A token that opens the event stream of one task (for ``EventSource``,
        which cannot send an Authorization header)."""
        return self._stream_token(
            account_id, task_id, int(now_seconds) // _STREAM_TOKEN_REUSE_SECONDS
        )

    def _make_stream_token(self, account_id: str, task_id: str, _period: int) -> str:
        return str(self._streams.dumps([account_id, task_id]))

    def file_signature(self, file_id: str, expires: int) -> str:
        """The signature of a link to a file's content valid until ``expires`` (unix
        seconds): HMAC-SHA256 of the method, path and expiry, base64url."""
        message = f"GET\n/v1/files/{file_id}/content\n{expires}".encode()
        digest = hmac.new(self._file_key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def file_link(
        self, file_id: str, file_expires_at: int, now: int, ttl_us: int | None = None
    ) -> tuple[str, int]:
        """A signed path to a file's content (``/v1/files/{id}/content?expires=…&
        signature=…``) and when it stops working (µs, whole seconds): after ``ttl_us``
        (default: the link TTL), never past the file's own expiry."""
        ttl = ttl_us if ttl_us is not None else self.file_link_ttl_us
        until = file_expires_at if ttl is None else min(file_expires_at, now + ttl)
        seconds = until // 1_000_000
        signature = self.file_signature(file_id, seconds)
        return (
            f"/v1/files/{file_id}/content?expires={seconds}&signature={signature}",
            seconds * 1_000_000,
        )

    def check_file_signature(self, file_id: str, expires: int, signature: str) -> bool:
        """Whether ``signature`` is this server's for the file and expiry (in constant
        time)."""
        return hmac.compare_digest(self.file_signature(file_id, expires), signature)

    def open_stream_token(self, token: str, task_id: str) -> str:
        """The account a stream token was made for, if it is valid for this task."""
        try:
            value: Any = self._streams.loads(token, max_age=STREAM_TOKEN_SECONDS)
        except SignatureExpired as exc:
            raise Unauthenticated("The stream token has expired.", code="token_expired") from exc
        except BadSignature as exc:
            raise Unauthenticated("Not a valid stream token.", code="invalid_token") from exc
        if not (isinstance(value, list) and len(value) == 2 and value[1] == task_id):
            raise Unauthenticated("The stream token is for another task.", code="invalid_token")
        return str(value[0])
