"""``taskgate``: run the server and workers, manage accounts and keys; the client
commands (submit, tasks, workflows, usage, files) are in ``client_commands``.

Every command honours ``--data-dir`` (or ``TASKGATE_DATA_DIR``) and the other
``TASKGATE_…`` settings.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from taskgate.core.clock import iso
from taskgate.core.errors import TaskgateError
from taskgate.core.money import format_credits, parse_credits

if TYPE_CHECKING:
    from taskgate.composition import OperatorServices
    from taskgate.settings import Settings

app = typer.Typer(help="taskgate: a self-hosted asynchronous task API.", no_args_is_help=True)
accounts_app = typer.Typer(help="Accounts.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
credits_app = typer.Typer(help="Credits.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(keys_app, name="keys")
app.add_typer(credits_app, name="credits")

# Lines are never wrapped: output read by scripts keeps one record per line.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Data directory (default: TASKGATE_DATA_DIR or ./taskgate-data)."
    ),
]


def _settings(data_dir: Path | None, **overrides: Any) -> Settings:
    # Imported here: the client commands do without it, and start faster.
    from taskgate.settings import Settings

    values = {key: value for key, value in overrides.items() if value is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values)


def _fail(exc: TaskgateError) -> None:
    err.print(f"[red]error:[/red] {exc.message} ({exc.code})")
    raise typer.Exit(1)


def _multiprocess_metrics(settings: Settings) -> None:
    """Point prometheus_client at a shared directory before anything imports it, so
    that worker processes' metrics reach the API's /metrics."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str((settings.run_dir / "metrics").resolve())
    from taskgate.metrics import prepare_multiprocess_dir

    prepare_multiprocess_dir(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]))


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int | None, typer.Option(help="Worker slots to run (default TASKGATE_WORKERS).")
    ] = None,
    no_workers: Annotated[bool, typer.Option("--no-workers", help="Serve the API only.")] = False,
    api_processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="API processes sharing the port (default TASKGATE_API_PROCESSES); with "
            "more than one, share rate-limit counters through TASKGATE_RATE_LIMIT_STORAGE_URL.",
        ),
    ] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
) -> None:
    """Run the API and worker slots (SQLite and local files by default)."""
    settings = _settings(data_dir)
    _multiprocess_metrics(settings)
    from taskgate.server import serve as run

    slots = 0 if no_workers else (workers if workers is not None else settings.workers)
    try:
        run(
            settings,
            host=host,
            port=port,
            workers=slots,
            api_processes=api_processes if api_processes is not None else settings.api_processes,
            access_log=access_log,
            announce=out.print,
        )
    except TaskgateError as exc:
        _fail(exc)


@app.command()
def worker(
    data_dir: DataDir = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker slots to run (default TASKGATE_WORKERS).")
    ] = None,
) -> None:
    """Run worker slots only, against the same data as the server."""
    settings = _settings(data_dir)
    _multiprocess_metrics(settings)
    from taskgate.worker.main import run_worker

    run_worker(settings, workers if workers is not None else settings.workers)


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Apply pending database migrations."""
    from taskgate.store import migrate as migrations
    from taskgate.store.db import Database

    settings = _settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url, pool_size=1)
    try:
        migrations.upgrade(db)
        out.print(f"Database at revision {migrations.current_revision(db)}.")
    finally:
        db.close()


def _services(data_dir: Path | None) -> OperatorServices:
    """What the operator's commands use: accounts, keys and credits (no workflows,
    storage or channel loaded); the schema brought up to date on SQLite."""
    from taskgate.composition import build_operator
    from taskgate.store import migrate as migrations

    settings = _settings(data_dir)
    services = build_operator(settings)
    if not migrations.is_up_to_date(services.db):
        if services.db.is_sqlite:
            migrations.upgrade(services.db)
        else:
            services.close()
            err.print("error: the database schema is out of date: run `taskgate migrate`.")
            raise typer.Exit(1)
    return services


@accounts_app.command("create")
def accounts_create(
    name: str,
    data_dir: DataDir = None,
    credits: Annotated[
        str | None, typer.Option(help="Credits to grant (decimals allowed).")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Tasks that may run at once.")] = 4,
) -> None:
    """Create an account and print its id."""
    services = _services(data_dir)
    try:
        account = services.accounts.create_account(name, credits=credits, concurrency=concurrency)
        out.print(account.id)
    except TaskgateError as exc:
        _fail(exc)
    finally:
        services.close()


@accounts_app.command("list")
def accounts_list(data_dir: DataDir = None) -> None:
    """List the accounts with their limits and credits."""
    services = _services(data_dir)
    try:
        found: list[Any] = []
        after: str | None = None
        while page := services.accounts.list_accounts(limit=100, after_id=after):
            found.extend(page)
            after = page[-1].id
    finally:
        services.close()
    table = Table("id", "name", "concurrency", "available", "reserved", "reads", "writes")
    for account in found:
        table.add_row(
            account.id,
            account.name,
            str(account.concurrency_limit),
            format_credits(account.credits_available),
            format_credits(account.credits_reserved),
            account.rate_limit_reads or "default",
            account.rate_limit_writes or "default",
        )
    Console(width=200).print(table)


@accounts_app.command("update")
def accounts_update(
    account: str,
    data_dir: DataDir = None,
    concurrency: Annotated[int | None, typer.Option(help="Tasks that may run at once.")] = None,
    rate_limit_reads: Annotated[
        str | None,
        typer.Option(help="Reads allowed per key, e.g. 120/minute; unlimited; or default."),
    ] = None,
    rate_limit_writes: Annotated[
        str | None,
        typer.Option(help="Writes allowed per key, e.g. 10/second; unlimited; or default."),
    ] = None,
) -> None:
    """Change the concurrency limit or the rate limits of ACCOUNT (name or acct_ id)."""
    from taskgate.services.accounts import UNCHANGED

    services = _services(data_dir)
    try:
        updated = services.accounts.update_limits(
            account,
            concurrency=concurrency,
            rate_limit_reads=UNCHANGED if rate_limit_reads is None else rate_limit_reads,
            rate_limit_writes=UNCHANGED if rate_limit_writes is None else rate_limit_writes,
        )
        out.print(
            f"{updated.name} ({updated.id}): concurrency {updated.concurrency_limit}, "
            f"reads {updated.rate_limit_reads or 'default'}, "
            f"writes {updated.rate_limit_writes or 'default'}"
        )
    except TaskgateError as exc:
        _fail(exc)
    finally:
        services.close()


@credits_app.command("grant")
def credits_grant(
    account: str,
    amount: Annotated[str, typer.Argument(help="Credits to add, decimals allowed (12.5).")],
    data_dir: DataDir = None,
    note: Annotated[str | None, typer.Option(help="Kept with the ledger entry.")] = None,
) -> None:
    """Add AMOUNT credits to ACCOUNT (name or acct_ id) and print its balance."""
    services = _services(data_dir)
    try:
        balance = services.billing.grant(account, amount, note)
        out.print(
            f"Granted {format_credits(parse_credits(amount.strip()))} credits to "
            f"{balance.account.name}; "
            f"available: {format_credits(balance.available)}."
        )
    except TaskgateError as exc:
        _fail(exc)
    finally:
        services.close()


@credits_app.command("show")
def credits_show(
    account: str,
    data_dir: DataDir = None,
    entries: Annotated[int, typer.Option(help="Latest ledger entries to list.")] = 10,
) -> None:
    """Show the credits of ACCOUNT and its latest ledger entries."""
    services = _services(data_dir)
    try:
        balance = services.billing.balance(account)
        latest = services.billing.entries(account, limit=entries) if entries > 0 else []
    except TaskgateError as exc:
        _fail(exc)
    finally:
        services.close()
    out.print(f"account    {balance.account.name} ({balance.account.id})")
    out.print(f"available  {format_credits(balance.available)}")
    out.print(f"reserved   {format_credits(balance.reserved)}")
    out.print(f"granted    {format_credits(balance.granted)}")
    out.print(
        f"charged    {format_credits(balance.charged_period)} since "
        f"{iso(balance.period_start)}, {format_credits(balance.charged_total)} in all"
    )
    if latest:
        table = Table("entry", "time", "kind", "credits", "task", "note")
        for entry in latest:
            table.add_row(
                str(entry.id),
                iso(entry.created_at),
                entry.kind,
                format_credits(entry.amount),
                entry.task_id or "",
                entry.note or "",
            )
        Console(width=200).print(table)


@app.command()
def doctor(data_dir: DataDir = None) -> None:
    """Check the credit invariants of every account and task; exit 1 on a violation."""
    services = _services(data_dir)
    try:
        found = services.billing.violations()
    finally:
        services.close()
    for violation in found:
        where = [violation.account_id]
        if violation.task_id:
            where.append(violation.task_id)
        if violation.entry_ids:
            where.append("ledger entries " + ", ".join(map(str, violation.entry_ids)))
        out.print(f"VIOLATION {' '.join(where)}: {violation.message}")
    if found:
        err.print(f"{len(found)} violation(s) found.")
        raise typer.Exit(1)
    out.print("Credits are consistent: every account and task checks out.")


@keys_app.command("create")
def keys_create(account: str, data_dir: DataDir = None) -> None:
    """Create an API key for ACCOUNT (name or acct_ id) and print it, once."""
    services = _services(data_dir)
    try:
        key, plaintext = services.accounts.create_key(account)
        err.print(f"Key {key.id} ({key.prefix}…). It is shown only this once:")
        out.print(plaintext)
    except TaskgateError as exc:
        _fail(exc)
    finally:
        services.close()


@keys_app.command("list")
def keys_list(account: str, data_dir: DataDir = None) -> None:
    """List the keys of ACCOUNT."""
    services = _services(data_dir)
    try:
        keys = services.accounts.list_keys(account)
    except TaskgateError as exc:
        _fail(exc)
    finally:
        services.close()
    table = Table("id", "prefix", "created", "last used", "revoked")
    for key in keys:
        table.add_row(
            key.id,
            key.prefix + "…",
            iso(key.created_at),
            iso(key.last_used_at) or "never",
            iso(key.revoked_at) or "",
        )
    Console(width=200).print(table)


@keys_app.command("revoke")
def keys_revoke(key: str, data_dir: DataDir = None) -> None:
    """Revoke KEY: its id, its prefix (as listed) or the key itself."""
    services = _services(data_dir)
    try:
        revoked = services.accounts.revoke_key(key)
        out.print(f"Revoked {revoked.id}.")
    except TaskgateError as exc:
        _fail(exc)
    finally:
        services.close()


#: The commands defined above, which run taskgate or act on its database (serve,
#: worker, migrate, doctor, accounts, keys, credits). A process started for one of
#: them leaves out the client commands, which load the client SDK: it starts about
#: a third of a second sooner.
OPERATOR_COMMANDS = frozenset(
    [
        *(
            info.name or typer.main.get_command_name(info.callback.__name__)
            for info in app.registered_commands
            if info.callback is not None
        ),
        *(info.name for info in app.registered_groups if info.name),
    ]
)


@functools.cache
def full_app() -> typer.Typer:
    """The ``taskgate`` command with the client commands as well (added once)."""
    from taskgate.cli import client_commands

    client_commands.register(app)
    return app


def main() -> None:
    args = sys.argv[1:]
    command = app if args and args[0] in OPERATOR_COMMANDS else full_app()
    command(prog_name="taskgate")


if __name__ == "__main__":
    main()
