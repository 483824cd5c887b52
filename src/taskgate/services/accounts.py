"""Accounts and API keys: creation, authentication, revocation."""

from __future__ import annotations

import functools
import hashlib
import secrets
import string
import zlib
from dataclasses import dataclass

from taskgate.core.clock import now_us
from taskgate.core.errors import (
    AccountNotFound,
    Conflict,
    InvalidInput,
    KeyNotFound,
    Unauthenticated,
)
from taskgate.core.ids import new_id
from taskgate.core.models import Account, ApiKey
from taskgate.core.money import SCALE, parse_credits
from taskgate.core.ratelimits import parse_rate_limit
from taskgate.store import accounts as repo
from taskgate.store import ledger
from taskgate.store.db import Conn, Database

KEY_PREFIX = "tg_live_"
_ALPHABET = string.ascii_letters + string.digits
_RANDOM_CHARS = 32
_CHECK_CHARS = 6
# Characters of a key kept (in clear) to identify it in listings.
_SHOWN_CHARS = len(KEY_PREFIX) + 8
DEFAULT_CONCURRENCY = 4
#: For :meth:`AccountService.update_limits`: leave this setting as it is.
UNCHANGED = repo.UNCHANGED
#: The largest single grant; balances stay far from the 64-bit limit of the columns.
MAX_GRANT_CREDITS = 1_000_000_000


def _base62(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECK_CHARS)


def _check_concurrency(concurrency: int) -> None:
    if not 1 <= concurrency <= 10_000:
        raise InvalidInput("Concurrency is 1–10000.", param="concurrency")


def generate_key() -> str:
    """``tg_live_`` + 32 random base62 characters + a 6-character CRC32 checksum."""
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_CHARS))
    return KEY_PREFIX + body + _checksum(body)


def well_formed(key: str) -> bool:
    """Whether a string can be a key; look-alikes are rejected without a query."""
    if not key.startswith(KEY_PREFIX) or len(key) != len(KEY_PREFIX) + _RANDOM_CHARS + _CHECK_CHARS:
        return False
    body = key[len(KEY_PREFIX) : len(KEY_PREFIX) + _RANDOM_CHARS]
    return key.endswith(_checksum(body))


def hash_key(key: str) -> str:
    # Keys carry 190 random bits: one SHA-256 is enough, no slow hash needed.
    return hashlib.sha256(key.encode()).hexdigest()


@functools.lru_cache(maxsize=4096)
def _digest_if_well_formed(key: str) -> str | None:
    # Every request of a key checks and hashes the same string: remembered for the
    # keys in use (the outcome depends on the string alone, never on the database).
    return hash_key(key) if well_formed(key) else None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an account, through one of its keys, and the account's
    rate-limit overrides (None: the server's defaults)."""

    account_id: str
    key_id: str
    rate_limit_reads: str | None = None
    rate_limit_writes: str | None = None


def check_rate_limit(value: str, param: str) -> str:
    """A rate limit in ``limits`` notation (``60/minute``, ``10/second;1000/day``) or
    ``unlimited``; raises InvalidInput otherwise."""
    try:
        parse_rate_limit(value)
    except ValueError as exc:
        raise InvalidInput(f"{exc} (or 'unlimited').", param=param) from exc
    return value.strip()


def parse_amount(value: str, param: str, *, allow_zero: bool = False) -> int:
    """Credits as given by a person (``"12.5"``) → millicredits; positive (or zero
    when allowed), and at most :data:`MAX_GRANT_CREDITS`."""
    try:
        amount = parse_credits(value)
    except ValueError as exc:
        raise InvalidInput(f"{value!r} is not an amount of credits: {exc}.", param=param) from exc
    if amount < 0 or (amount == 0 and not allow_zero):
        raise InvalidInput("The amount must be positive.", param=param)
    if amount > MAX_GRANT_CREDITS * SCALE:
        raise InvalidInput(
            f"At most {MAX_GRANT_CREDITS:,} credits can be granted at once.", param=param
        )
    return amount


class AccountService:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._key_use: dict[str, int] = {}

    # -- accounts -------------------------------------------------------------

    def create_account(
        self,
        name: str,
        *,
        credits: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        rate_limit_reads: str | None = None,
        rate_limit_writes: str | None = None,
    ) -> Account:
        name = name.strip()
        if not name or len(name) > 100 or name.startswith("acct_"):
            raise InvalidInput(
                "An account name is 1–100 characters and does not start with acct_.", param="name"
            )
        _check_concurrency(concurrency)
        amount = 0
        if credits is not None:
            amount = parse_amount(credits, "credits", allow_zero=True)
        reads, writes = (
            None if value is None or value == "default" else check_rate_limit(value, param)
            for param, value in (
                ("rate_limit_reads", rate_limit_reads),
                ("rate_limit_writes", rate_limit_writes),
            )
        )
        now = now_us()
        account = Account(
            id=new_id("acct"),
            name=name,
            concurrency_limit=concurrency,
            running=0,
            created_at=now,
            rate_limit_reads=reads,
            rate_limit_writes=writes,
        )

        def write(conn: Conn) -> Account:
            repo.create(conn, account)
            if amount:
                ledger.grant(conn, account.id, amount, now, "initial credits")
            found = repo.get(conn, account.id)
            assert found is not None
            return found

        return self._db.write_sync(write)

    def list_accounts(self, *, limit: int = 20, after_id: str | None = None) -> list[Account]:
        return self._db.read_sync(lambda conn: repo.list_page(conn, limit=limit, after_id=after_id))

    def update_limits(
        self,
        account: str,
        *,
        concurrency: int | None = None,
        rate_limit_reads: object = UNCHANGED,
        rate_limit_writes: object = UNCHANGED,
        output_retention_seconds: object = UNCHANGED,
    ) -> Account:
        """Change an account's concurrency limit, rate-limit overrides (None or
        ``default`` for a rate limit: back to the server's default) and output
        retention in seconds (None: the server's default)."""
        owner = self.find_account(account)
        if concurrency is not None:
            _check_concurrency(concurrency)
        overrides: dict[str, object] = {}
        for param, value in (
            ("rate_limit_reads", rate_limit_reads),
            ("rate_limit_writes", rate_limit_writes),
        ):
            if value is UNCHANGED:
                continue
            if value is None or value == "default":
                overrides[param] = None
            elif isinstance(value, str):
                overrides[param] = check_rate_limit(value, param)
            else:
                raise InvalidInput("A rate limit is a string.", param=param)
        if output_retention_seconds is not UNCHANGED:
            if output_retention_seconds is not None and (
                not isinstance(output_retention_seconds, int)
                or isinstance(output_retention_seconds, bool)
                or output_retention_seconds < 1
            ):
                raise InvalidInput(
                    "output_retention_seconds is a whole number of seconds (≥ 1) or null.",
                    param="output_retention_seconds",
                )
            overrides["output_retention_seconds"] = output_retention_seconds

        def write(conn: Conn) -> Account:
            repo.update_limits(conn, owner.id, concurrency=concurrency, **overrides)
            found = repo.get(conn, owner.id)
            assert found is not None
            return found

        return self._db.write_sync(write)

    def find_account(self, id_or_name: str) -> Account:
        account = self._db.read_sync(lambda conn: repo.find(conn, id_or_name))
        if account is None:
            raise AccountNotFound(f"No account {id_or_name!r}.")
        return account

    def ensure_default(self, initial_credits: str) -> str | None:
        """On an empty database, create the ``default`` account and return its first
        key (shown once); otherwise None."""
        if self._db.read_sync(repo.count):
            return None
        try:
            account = self.create_account("default", credits=initial_credits)
        except Conflict:
            return None  # another process won the race
        return self.create_key(account.id)[1]

    # -- keys -----------------------------------------------------------------

    def create_key(self, account: str) -> tuple[ApiKey, str]:
        """A new key for an account (name or id): its record and the key itself."""
        owner = self.find_account(account)
        plaintext = generate_key()
        key = ApiKey(
            id=new_id("key"),
            account_id=owner.id,
            prefix=plaintext[:_SHOWN_CHARS],
            created_at=now_us(),
            last_used_at=None,
            revoked_at=None,
        )
        self._db.write_sync(lambda conn: repo.add_key(conn, key, hash_key(plaintext)))
        return key, plaintext

    def list_keys(self, account: str) -> list[ApiKey]:
        owner = self.find_account(account)
        return self._db.read_sync(lambda conn: repo.keys_of(conn, owner.id))

    def revoke_key(self, id_or_prefix: str) -> ApiKey:
        """Revoke a key given by its id, its prefix (as listed, ``…`` allowed) or itself."""
        id_or_prefix = id_or_prefix.strip().rstrip("…")
        if well_formed(id_or_prefix):
            digest = hash_key(id_or_prefix)
            by_hash = self._db.read_sync(lambda conn: repo.key_by_hash(conn, digest))
            id_or_prefix = by_hash.id if by_hash is not None else id_or_prefix
        found = self._db.read_sync(lambda conn: repo.find_keys(conn, id_or_prefix))
        if not found:
            raise KeyNotFound(f"No key {id_or_prefix!r}.")
        if len(found) > 1:
            raise Conflict(
                f"{id_or_prefix!r} matches several keys; use the key id.", code="ambiguous_key"
            )
        key = found[0]
        self._db.write_sync(lambda conn: repo.revoke_key(conn, key.id, now_us()))
        return self._db.read_sync(lambda conn: repo.find_keys(conn, key.id))[0]

    # -- authentication --------------------------------------------------------

    async def authenticate(self, key: str | None) -> Principal:
        digest = None if key is None else _digest_if_well_formed(key)
        if digest is None:
            raise Unauthenticated("Missing or malformed API key.")
        found = await self._db.read_memo(
            ("api_key", digest), lambda conn: repo.authenticate(conn, digest)
        )
        if found is None or found["revoked_at"] is not None:
            raise Unauthenticated("Invalid or revoked API key.")
        self._key_use[found["id"]] = now_us()
        return Principal(
            account_id=found["account_id"],
            key_id=found["id"],
            rate_limit_reads=found["rate_limit_reads"],
            rate_limit_writes=found["rate_limit_writes"],
        )

    async def flush_key_use(self) -> None:
        """Write the ``last_used_at`` of keys used since the last flush."""
        if not self._key_use:
            return
        used, self._key_use = list(self._key_use.items()), {}
        await self._db.write(lambda conn: repo.touch_keys(conn, used))
