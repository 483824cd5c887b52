"""On PostgreSQL, the reads that a partial index serves use it in a generic plan too.

psycopg prepares a statement once it has run a few times, and the server may then
settle on a generic plan, made without the parameters' values. A partial index
(``WHERE status = 'queued'``) serves such a plan only where the statement names the
status itself (``tables.status_is``): with a bound status, the position of a queued
task read every task its account ever had.
"""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ClauseElement

from taskgate.composition import Services
from taskgate.store import deliveries
from taskgate.store import tasks as repo
from taskgate.store.prepared import Prepared

pytestmark = pytest.mark.postgresql_only

STATEMENTS = {
    "queue position": (repo._PLACE, "ix_tasks_claim"),
    "queued per account": (repo._QUEUED_PER_ACCOUNT, "ix_tasks_claim"),
    "queued of an account": (repo._QUEUED, "ix_tasks_claim"),
    "count queued": (repo._COUNT_QUEUED, "ix_tasks_claim"),
    "due deliveries": (deliveries._DUE, "ix_webhook_deliveries_due"),
    "next due delivery": (deliveries._NEXT_DUE, "ix_webhook_deliveries_lane"),
}


def generic_plan(services: Services, prepared: Prepared) -> str:
    """The plan the server makes for the statement without its parameters' values
    (sequential scans off, so that a table this small still shows its index)."""
    statement = prepared.statement
    assert isinstance(statement, ClauseElement)
    dialect = postgresql.psycopg.dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]
    compiled = statement.compile(dialect=dialect)
    # One $n per parameter name, however often the statement uses it.
    nulls = ", ".join("NULL" for _ in compiled.params)
    with services.db.write_engine.connect() as conn:
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        conn.exec_driver_sql("SET enable_seqscan = off")
        conn.exec_driver_sql(f"PREPARE generic AS {compiled.string}")
        try:
            rows = conn.exec_driver_sql(f"EXPLAIN EXECUTE generic({nulls})").all()
        finally:
            conn.exec_driver_sql("DEALLOCATE generic")
            conn.exec_driver_sql("RESET ALL")
            conn.rollback()
    return "\n".join(str(row[0]) for row in rows)


@pytest.mark.parametrize("name", STATEMENTS)
def test_the_generic_plan_uses_the_partial_index(services: Services, name: str) -> None:
    prepared, index = STATEMENTS[name]
    plan = generic_plan(services, prepared)
    assert index in plan, plan
