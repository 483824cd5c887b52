"""Tasks as clients see them: submit, read, list, cancel."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from functools import partial
from typing import Any

from pydantic import ValidationError

from taskgate.core.clock import MICROS, now_us
from taskgate.core.errors import (
    IdempotencyConflict,
    InvalidInput,
    InvalidParam,
    TaskNotCancellable,
    TaskNotFound,
    TaskRunning,
    WorkflowNotFound,
)
from taskgate.core.ids import new_id
from taskgate.core.models import Task
from taskgate.core.money import parse_credits
from taskgate.core.states import TaskStatus
from taskgate.payloads import MAX_IDEMPOTENCY_KEY_CHARS, WorkflowSubmit, output_files
from taskgate.services.channel import API, WORKER, Channel
from taskgate.services.files import FileService
from taskgate.services.netguard import Resolver, check_url
from taskgate.store import retention
from taskgate.store import tasks as repo
from taskgate.store.db import Conn, Database
from taskgate.workflows.registry import Registry
from taskgate.workflows.sdk import file_kinds, file_refs, split_task_ref

MAX_PAGE = 100
_MILLI = Decimal("0.001")


@dataclass(slots=True)
class TaskView:
    """A task with what is derived when it is read: its place in the queue."""

    task: Task
    queue_position: int | None = None
    estimated_seconds: float | None = None

    def remaining_seconds(self, now: int) -> float | None:
        """The expected time to completion, for polling hints; None once terminal."""
        task = self.task
        if task.terminal:
            return None
        if self.estimated_seconds is not None:
            return self.estimated_seconds
        started = task.started_at or now
        return max(0.0, task.expected_seconds - (now - started) / MICROS)


def check_idempotency_key(value: str, param: str) -> str:
    # A bad out_task_id is a bad value in the body (422, like its length limit);
    # a bad Idempotency-Key header is a 400.
    error = InvalidInput if param == "out_task_id" else InvalidParam
    if not value or len(value) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise error(f"An idempotency key is 1–{MAX_IDEMPOTENCY_KEY_CHARS} characters.", param=param)
    if not all(" " <= ch <= "~" for ch in value):
        raise error("An idempotency key holds printable ASCII characters only.", param=param)
    return value


def _request_hash(workflow: str, input_: dict[str, Any], req: WorkflowSubmit) -> str:
    canonical = json.dumps(
        {
            "workflow": workflow,
            "input": input_,
            "metadata": req.metadata,
            "priority": req.priority,
            "callback_url": str(req.callback_url) if req.callback_url else None,
            "callback_events": req.callback_events,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def encode_cursor(task_id: str) -> str:
    return base64.urlsafe_b64encode(task_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidParam("Not a cursor from this list.", param="cursor") from exc
    if not value.startswith("task_"):
        raise InvalidParam("Not a cursor from this list.", param="cursor")
    return value


def _view_of(conn: Conn, task: Task) -> TaskView:
    """A task with its place in the queue (read when it is queued)."""
    if task.status is not TaskStatus.QUEUED:
        return TaskView(task)
    place = repo.queue_position(conn, task)
    # Tasks ahead in the account run ``slots`` at a time before this one.
    waves = place.own_ahead // place.slots + 1
    return TaskView(task, place.position, round(waves * task.expected_seconds, 3))


class TaskService:
    def __init__(
        self,
        db: Database,
        registry: Registry,
        channel: Channel,
        *,
        on_change: Callable[[], None] | None = None,
        allow_private_urls: bool = False,
        resolve: Resolver | None = None,
        files: FileService | None = None,
    ) -> None:
        self._db = db
        self._registry = registry
        self._channel = channel
        self._on_change = on_change
        self._allow_private = allow_private_urls
        self._resolve = resolve
        self._files = files

    def _changed(self) -> None:
        """Events were written: wake this process's streams and the other API
        processes'."""
        if self._on_change is not None:
            self._on_change()
        self._channel.publish(API, b"e")

    async def submit(
        self, account_id: str, workflow_name: str, req: WorkflowSubmit, idempotency_key: str | None
    ) -> tuple[TaskView, bool]:
        """Create a task, or return the one an idempotency key already made.

        Returns the task and whether it was created now.
        """
        task = self._new_task(account_id, workflow_name, req, idempotency_key)
        task.callback_url = await self._check_callback(task.callback_url)
        # Input files are resolved (URLs fetched) before the task is written.
        inputs = await self._resolve_inputs(task)

        def write(conn: Conn) -> tuple[Task, bool]:
            if task.out_task_id is not None:
                existing = repo.get_by_out_task_id(conn, account_id, task.out_task_id)
                if existing is not None:
                    return existing, False
            stored, created = repo.insert(conn, task)
            if created and inputs and self._files is not None:
                self._files.link_task_inputs(conn, task, inputs)
            return stored, created

        stored, created = await self._db.write(write)
        if not created and stored.request_hash != task.request_hash:
            raise IdempotencyConflict(
                "This idempotency key was used for a different request.", param="out_task_id"
            )
        if created:
            self._channel.publish(WORKER, b"t")
            self._changed()
        return await self._view(stored), created

    async def submit_many(
        self, account_id: str, workflow_name: str, requests: list[WorkflowSubmit]
    ) -> list[Task]:
        """Create many tasks (without idempotency keys) in one transaction: all or none."""
        created = [self._new_task(account_id, workflow_name, req, None) for req in requests]
        for task in created:
            task.callback_url = await self._check_callback(task.callback_url)

        def write(conn: Conn) -> None:
            for task in created:
                repo.insert(conn, task)

        await self._db.write(write)
        if created:
            self._channel.publish(WORKER, b"t")
            self._changed()
        return created

    async def _resolve_inputs(self, task: Task) -> dict[str, str]:
        """The files the task's input refers to (``{ref: file id}``); 422 naming the
        field for an unknown or foreign file or a URL that cannot be fetched."""
        wf = self._registry.get(task.workflow)
        if wf is None or self._files is None:
            return {}
        refs = file_refs(wf.input, task.input)
        if not refs:
            return {}
        if task.out_task_id is not None:
            # A retried submission gets its first task back: fetch nothing again.
            out_task_id = task.out_task_id
            existing = await self._db.read(
                lambda conn: repo.get_by_out_task_id(conn, task.account_id, out_task_id)
            )
            if existing is not None:
                return {}
        kinds = file_kinds(wf.input, task.input)
        outputs = await self._earlier_outputs(task.account_id, refs, kinds)
        resolved = await self._files.resolve_inputs(
            task.account_id, {param: outputs.get(ref, ref) for param, ref in refs.items()}, kinds
        )
        resolved.update(outputs)
        return resolved

    async def _earlier_outputs(
        self, account_id: str, refs: dict[str, str], kinds: dict[str, str]
    ) -> dict[str, str]:
        """The output file each :class:`TaskOutput` ref (``task_…#index``) names:
        the index-th file of the field's kind in that completed task's output."""
        found: dict[str, str] = {}
        for param, ref in refs.items():
            parts = split_task_ref(ref)
            if parts is None or ref in found:
                continue
            task_id, index = parts
            earlier = await self._db.read(partial(repo.get, task_id=task_id, account_id=account_id))
            if earlier is None:
                raise InvalidInput(f"{param}: no task {task_id!r}.", param=param)
            if earlier.status is not TaskStatus.COMPLETED:
                raise InvalidInput(
                    f"{param}: the task {task_id!r} is {earlier.status.value}, not completed.",
                    param=param,
                )
            kind = kinds.get(param)
            files = [
                str(item["file_id"])
                for item in output_files(earlier.output or [])
                if kind is None or item.get("type") == kind
            ]
            if index >= len(files):
                what = f"{kind} files" if kind else "files"
                raise InvalidInput(
                    f"{param}: the task {task_id!r} has {len(files)} output {what}, "
                    f"so no index {index}.",
                    param=param,
                )
            found[ref] = files[index]
        return found

    async def _check_callback(self, url: str | None) -> str | None:
        """A callback URL passes the SSRF guard (422 ``invalid_param`` otherwise)."""
        if url is None:
            return None
        return await check_url(
            url, allow_private=self._allow_private, resolve=self._resolve, param="callback_url"
        )

    def _new_task(
        self, account_id: str, workflow_name: str, req: WorkflowSubmit, idempotency_key: str | None
    ) -> Task:
        """Validate a submission and build its task (nothing written)."""
        wf = self._registry.get(workflow_name)
        if wf is None:
            raise WorkflowNotFound(workflow_name)
        out_task_id = req.out_task_id
        if out_task_id is not None:
            check_idempotency_key(out_task_id, "out_task_id")
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key, "Idempotency-Key")
            if out_task_id is not None and out_task_id != idempotency_key:
                raise InvalidParam(
                    "The Idempotency-Key header and out_task_id differ.", param="out_task_id"
                )
            out_task_id = idempotency_key
        try:
            value = wf.input.model_validate(req.input)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(part) for part in ("input", *first["loc"]))
            raise InvalidInput(f"{loc}: {first['msg']}", param=loc) from exc
        estimate = wf.estimate_for(value)
        credits = parse_credits(Decimal(estimate.credits).quantize(_MILLI, rounding=ROUND_CEILING))
        input_ = value.model_dump(mode="json")
        now = now_us()
        return Task(
            id=new_id("task"),
            account_id=account_id,
            workflow=wf.name,
            workflow_version=wf.version,
            queue=wf.queue,
            status=TaskStatus.QUEUED,
            priority=req.priority,
            input=input_,
            metadata=req.metadata,
            out_task_id=out_task_id,
            request_hash=_request_hash(wf.name, input_, req),
            callback_url=str(req.callback_url) if req.callback_url else None,
            callback_events=list(req.callback_events) if req.callback_events else None,
            callback_status="pending" if req.callback_url else None,
            progress_percent=0.0,
            progress_stage=None,
            progress_message=None,
            output=None,
            warnings=None,
            error=None,
            usage=None,
            estimated_credits=credits,
            # The estimate is held until the task ends.
            reserved_credits=credits,
            charged_credits=None,
            refunded_credits=None,
            expected_seconds=float(estimate.seconds),
            timeout_seconds=wf.timeout,
            attempts=0,
            max_attempts=wf.max_attempts,
            run_at=now,
            worker_id=None,
            lease_expires_at=None,
            created_at=now,
            updated_at=now,
            started_at=None,
            completed_at=None,
            cancel_requested_at=None,
            event_seq=1,
        )

    async def get(self, account_id: str, task_id: str) -> TaskView:
        def read(conn: Conn) -> TaskView | None:
            task = repo.get(conn, task_id, account_id)
            return None if task is None else _view_of(conn, task)

        # The route clients poll: served again from memory while nothing changed.
        view = await self._db.read_memo(("task", task_id, account_id), read)
        if view is None:
            raise TaskNotFound(task_id)
        return view

    async def query(
        self, account_id: str, task_id: str | None, out_task_id: str | None
    ) -> TaskView:
        if (task_id is None) == (out_task_id is None):
            raise InvalidParam("Give exactly one of task_id and out_task_id.", param="task_id")
        if task_id is not None:
            return await self.get(account_id, task_id)
        assert out_task_id is not None
        task = await self._db.read(
            lambda conn: repo.get_by_out_task_id(conn, account_id, out_task_id)
        )
        if task is None:
            raise TaskNotFound(out_task_id)
        return await self._view(task)

    async def list(
        self,
        account_id: str,
        *,
        limit: int = 20,
        cursor: str | None = None,
        statuses: list[str] | None = None,
        workflow: str | None = None,
        created_after: int | None = None,
        created_before: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> tuple[list[TaskView], bool, str | None]:
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidParam(f"limit is 1–{MAX_PAGE}.", param="limit")
        for status in statuses or []:
            if status not in TaskStatus.__members__.values():
                raise InvalidParam(f"Unknown status {status!r}.", param="status")
        for key in metadata or {}:
            # SQLite's JSON paths cannot spell a key holding a double quote (and a
            # malformed path is a database error), so such a filter is refused here.
            if '"' in key:
                raise InvalidParam(
                    "A metadata filter key cannot contain a double quote.",
                    param=f"metadata[{key}]",
                )
        before = decode_cursor(cursor) if cursor else None
        found, more = await self._db.read(
            lambda conn: repo.list_page(
                conn,
                account_id,
                limit=limit,
                before_id=before,
                statuses=statuses,
                workflow=workflow,
                created_after=created_after,
                created_before=created_before,
                metadata=metadata,
            )
        )
        views = [await self._view(task) for task in found]
        next_cursor = encode_cursor(found[-1].id) if more and found else None
        return views, more, next_cursor

    async def cancel(self, account_id: str, task_id: str) -> TaskView:
        def write(conn: Conn) -> Task:
            # Locked: a worker's claim skips the row, and its finish waits.
            task = repo.get_for_update(conn, task_id, account_id)
            if task is None:
                raise TaskNotFound(task_id)
            now = now_us()
            if task.status is TaskStatus.QUEUED:
                changed = repo.cancel_queued(conn, task_id, now)
                assert changed is not None
                return changed
            if task.status is TaskStatus.RUNNING:
                if task.cancel_requested_at is None:
                    changed = repo.request_cancel(conn, task_id, now)
                    assert changed is not None
                    return changed
                return task
            if task.status is TaskStatus.CANCELLED:
                return task
            raise TaskNotCancellable(f"The task is {task.status} and cannot be cancelled.")

        task = await self._db.write(write)
        if task.status is TaskStatus.RUNNING:
            self._channel.publish(WORKER, b"c" + task.id.encode())
        self._changed()
        return await self._view(task)

    async def delete(self, account_id: str, task_id: str) -> None:
        """Purge a terminal task with its events, deliveries and output files."""

        def write(conn: Conn) -> list[str]:
            task = repo.get_for_update(conn, task_id, account_id)
            if task is None:
                raise TaskNotFound(task_id)
            if not task.terminal:
                raise TaskRunning("Only a completed, failed or cancelled task can be deleted.")
            return retention.purge_tasks(conn, [task_id])

        keys = await self._db.write(write)
        if self._files is not None:
            await self._files.delete_blobs(keys)

    async def _view(self, task: Task) -> TaskView:
        if task.status is not TaskStatus.QUEUED:
            return TaskView(task)
        return await self._db.read(lambda conn: _view_of(conn, task))
