"""Which database a URL selects, and how a PostgreSQL URL reaches psycopg 3."""

from __future__ import annotations

import pytest

from taskgate.store.db import Database
from taskgate.store.postgres import is_postgresql, normalise_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgres://u:pw@h/db?sslmode=require", "postgresql+psycopg://u:pw@h/db?sslmode=require"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_postgresql_urls_name_psycopg_3(given: str, expected: str) -> None:
    assert is_postgresql(given)
    assert normalise_url(given) == expected


def test_another_driver_or_database_is_refused() -> None:
    with pytest.raises(ValueError, match="psycopg 3"):
        normalise_url("postgresql+asyncpg://u@h/db")
    with pytest.raises(ValueError, match="not a PostgreSQL URL") as refused:
        Database("mysql://u:secret@h/db")
    assert "secret" not in str(refused.value)
    assert not is_postgresql("sqlite:///x.db")
