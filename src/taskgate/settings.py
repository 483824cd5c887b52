"""The one typed settings object (environment ``TASKGATE_…`` or CLI flags).

Built once at the edge (the CLI) and passed down; nothing else reads the environment.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from taskgate.core.ratelimits import parse_rate_limit

# The ``limits`` storages taskgate installs the clients of.
_RATE_LIMIT_STORAGES = frozenset(
    {"memory", "redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster"}
)


_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TASKGATE_", extra="ignore")

    data_dir: Path = Path("./taskgate-data")
    database_url: str | None = None
    #: Pooled connections per process; on PostgreSQL each API and worker process
    #: also keeps one connection of its own for LISTEN/NOTIFY wake-ups.
    db_pool_size: int = Field(default=5, ge=1)
    workflows: Annotated[list[str], NoDecode] = Field(default_factory=list)
    secret_key: str | None = None
    public_url: str | None = None
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    initial_credits: str = "1000"

    rate_limit_reads: str = "60/minute"
    rate_limit_writes: str = "600/minute"
    rate_limit_storage_url: str = "memory://"

    lease_seconds: float = Field(default=30.0, gt=0)
    cancel_grace_seconds: float = Field(default=10.0, ge=0)
    drain_seconds: float = Field(default=30.0, ge=0)
    # How often an idle worker looks at the database when no wake-up arrives.
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    # First retry delay; each further attempt doubles it (capped at 10 minutes).
    retry_backoff_seconds: float = Field(default=5.0, ge=0)
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=0)
    # API processes ``serve`` runs on its port (each with its own event loop).
    api_processes: int = Field(default=1, ge=1)

    max_upload_bytes: int = Field(default=100 * 1024 * 1024, gt=0)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)

    output_retention: timedelta = timedelta(days=7)
    input_retention: timedelta = timedelta(hours=24)
    task_retention: timedelta = timedelta(days=30)
    link_ttl: timedelta | None = None
    # How often a worker deletes expired files and purges old tasks.
    retention_interval_seconds: float = Field(default=60.0, gt=0)

    storage_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None

    # Delays (seconds) before the retries of a failed delivery; each gets jitter.
    webhook_retry_schedule: Annotated[tuple[float, ...], NoDecode] = (
        5,
        300,
        1800,
        7200,
        18000,
        36000,
        36000,
    )
    webhook_timeout_seconds: float = Field(default=15.0, gt=0)
    # An endpoint whose deliveries have all failed for this long is disabled.
    webhook_disable_after_seconds: float = Field(default=5 * 86400.0, gt=0)
    sse_keepalive_seconds: float = Field(default=15.0, gt=0)
    allow_private_urls: bool = False
    admin_token: str | None = None

    log_level: str = "info"
    log_format: str = "text"

    @field_validator("workflows", "cors_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _schedule(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
            try:
                delays = tuple(float(part) for part in parts)
            except ValueError:
                raise ValueError(f"{value!r} is not a comma-separated list of seconds") from None
            value = delays
        if isinstance(value, tuple | list) and not all(
            isinstance(delay, int | float) and 0 <= delay < float("inf") for delay in value
        ):
            raise ValueError("retry delays are seconds, 0 or more")
        return value

    @field_validator(
        "output_retention", "input_retention", "task_retention", "link_ttl", mode="before"
    )
    @classmethod
    def _duration(cls, value: object) -> object:
        """Seconds (``90``, ``2.5``), a number with a unit (``30s``, ``15m``, ``24h``,
        ``7d``), or ISO 8601 (``P7D``)."""
        if isinstance(value, str):
            match = _DURATION.fullmatch(value.strip().lower())
            if match:
                number, unit = match.groups()
                return timedelta(seconds=float(number) * _UNITS[unit or "s"])
        return value

    @field_validator("rate_limit_reads", "rate_limit_writes")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        """``limits`` notation (``60/minute``, ``10/second;1000/day``) or ``unlimited``:
        checked here, so that a bad value stops the server before anything starts."""
        parse_rate_limit(value)
        return value.strip()

    @field_validator("rate_limit_storage_url")
    @classmethod
    def _rate_limit_storage(cls, value: str) -> str:
        scheme = value.partition("://")[0].removeprefix("async+")
        if scheme not in _RATE_LIMIT_STORAGES:
            raise ValueError(f"{value!r} is not a storage such as 'memory://' or 'redis://host'")
        return value

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "taskgate.db"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path.resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def run_dir(self) -> Path:
        """Sockets of the local wake-up channel (embedded mode)."""
        return self.data_dir / "run"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def work_dir(self) -> Path:
        """Scratch directories of running task attempts."""
        return self.data_dir / "work"
