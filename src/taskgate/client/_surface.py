"""The public surface, declared once for both clients.

Each method is an :class:`Op` (or :class:`IterOp`) descriptor around a plan. Read
from a resource of a :class:`Client` it is a plain function that runs the plan with
the :class:`SyncDriver`; from an :class:`AsyncClient`, a coroutine function (or an
async iterator) that runs it with the :class:`AsyncDriver`. The descriptors'
overloads give type checkers the right signature for each.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

from taskgate.client import _files, _plans, _waiting, _webhooks
from taskgate.client._config import Config
from taskgate.client._drivers import AsyncDriver, SyncDriver
from taskgate.client._effects import Plan
from taskgate.client._sse import TaskEvent
from taskgate.payloads import DeliveryObject, FileObject, TaskObject, WebhookObject

P = ParamSpec("P")
T = TypeVar("T")
O = TypeVar("O")  # noqa: E741
D = TypeVar("D", bound=SyncDriver | AsyncDriver)


class Resource(Generic[D]):
    """A group of methods bound to one client's driver and configuration."""

    def __init__(self, driver: D, config: Config) -> None:
        self._driver: D = driver
        self.config = config


def _named(call: Callable[..., Any], plan: Callable[..., Any], name: str) -> None:
    functools.update_wrapper(call, plan)
    call.__name__ = call.__qualname__ = name


class Op(Generic[O, P, T]):
    """A method written once as a plan: returns a ``T`` on a :class:`Client`, an
    awaitable of ``T`` on an :class:`AsyncClient`."""

    def __init__(self, plan: Callable[Concatenate[O, P], Plan[T]]) -> None:
        self._plan = plan
        self._name = plan.__name__
        self.__doc__ = plan.__doc__

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Op[O, P, T]: ...
    @overload
    def __get__(self, obj: Resource[SyncDriver], owner: type[Any]) -> Callable[P, T]: ...
    @overload
    def __get__(
        self, obj: Resource[AsyncDriver], owner: type[Any]
    ) -> Callable[P, Awaitable[T]]: ...
    def __get__(self, obj: Resource[Any] | None, owner: type[Any]) -> Any:
        if obj is None:
            return self
        plan, target = self._plan, cast(O, obj)
        driver: SyncDriver | AsyncDriver = obj._driver
        call: Callable[..., Any]
        if isinstance(driver, SyncDriver):

            def call(*args: P.args, **kwargs: P.kwargs) -> T:
                return driver.run(plan(target, *args, **kwargs))

        else:

            async def call(*args: P.args, **kwargs: P.kwargs) -> T:
                return await driver.run(plan(target, *args, **kwargs))

        _named(call, plan, self._name)
        return call


class IterOp(Generic[O, P, T]):
    """A method written once as a plan that emits ``T`` values: a generator of them on
    a :class:`Client`, an async generator on an :class:`AsyncClient` (close it, or
    use ``contextlib.aclosing``, when leaving early). Nothing is sent until the
    iteration starts."""

    def __init__(self, plan: Callable[Concatenate[O, P], Plan[None]], item: type[T]) -> None:
        self._plan = plan
        self._name = plan.__name__
        self.item = item
        self.__doc__ = plan.__doc__

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> IterOp[O, P, T]: ...
    @overload
    def __get__(
        self, obj: Resource[SyncDriver], owner: type[Any]
    ) -> Callable[P, Generator[T, None, None]]: ...
    @overload
    def __get__(
        self, obj: Resource[AsyncDriver], owner: type[Any]
    ) -> Callable[P, AsyncGenerator[T, None]]: ...
    def __get__(self, obj: Resource[Any] | None, owner: type[Any]) -> Any:
        if obj is None:
            return self
        plan, target, driver = self._plan, cast(O, obj), obj._driver

        def call(*args: P.args, **kwargs: P.kwargs) -> Any:
            return driver.iterate(plan(target, *args, **kwargs))

        _named(call, plan, self._name)
        return call


class RunOp(Generic[P]):
    """``tasks.run``: creates a task and gives a :class:`TaskRun` handle of the same
    mode as the client."""

    def __init__(self, plan: Callable[Concatenate[Any, P], Plan[_Started]]) -> None:
        self._plan = plan
        self.__doc__ = plan.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> RunOp[P]: ...
    @overload
    def __get__(
        self, obj: Resource[SyncDriver], owner: type[Any]
    ) -> Callable[P, TaskRun[SyncDriver]]: ...
    @overload
    def __get__(
        self, obj: Resource[AsyncDriver], owner: type[Any]
    ) -> Callable[P, Awaitable[TaskRun[AsyncDriver]]]: ...
    def __get__(self, obj: Resource[Any] | None, owner: type[Any]) -> Any:
        if obj is None:
            return self
        plan, driver, config = self._plan, obj._driver, obj.config
        call: Callable[..., Any]
        if isinstance(driver, SyncDriver):

            def call(*args: P.args, **kwargs: P.kwargs) -> TaskRun[SyncDriver]:
                started = driver.run(plan(obj, *args, **kwargs))
                return TaskRun(driver, config, started.task, started.timeout)

        else:

            async def call(*args: P.args, **kwargs: P.kwargs) -> TaskRun[AsyncDriver]:
                started = await driver.run(plan(obj, *args, **kwargs))
                return TaskRun(driver, config, started.task, started.timeout)

        _named(call, plan, "run")
        return call


# -- the resources ---------------------------------------------------------------


@dataclass(frozen=True)
class _Started:
    task: TaskObject
    timeout: float | None


def _start(
    ctx: _plans.Ctx,
    workflow: str,
    input: dict[str, Any] | None = None,
    *,
    timeout: float | None = None,
    metadata: dict[str, str] | None = None,
    priority: int | None = None,
    idempotency_key: str | None = None,
    callback_url: str | None = None,
    callback_events: list[str] | None = None,
) -> Plan[_Started]:
    """Create a task and return a :class:`TaskRun` handle at once: its ``task_id``
    is known, and ``wait()`` / ``result()`` follow it to its end (within
    ``timeout`` seconds unless they are given their own)."""
    task = yield from _plans.create_task(
        ctx,
        workflow,
        input,
        metadata=metadata,
        priority=priority,
        idempotency_key=idempotency_key,
        callback_url=callback_url,
        callback_events=callback_events,
    )
    return _Started(task, timeout)


class Workflows(Resource[D]):
    """``client.workflows``: the catalogue."""

    list = Op(_plans.list_workflows)
    get = Op(_plans.get_workflow)


class Usage(Resource[D]):
    """``client.usage``: credits, tasks in progress and rate limits."""

    get = Op(_plans.get_usage)


class Tasks(Resource[D]):
    """``client.tasks``: create, read, list, cancel, follow and wait for tasks."""

    create = Op(_plans.create_task)
    get = Op(_plans.get_task)
    query = Op(_plans.query_task)
    cancel = Op(_plans.cancel_task)
    list = IterOp(_plans.list_tasks, TaskObject)
    stream = IterOp(_waiting.stream_task, TaskEvent)
    wait = Op(_waiting.wait_task)
    run = RunOp(_start)


class Files(Resource[D]):
    """``client.files``: upload workflow inputs, read and download files."""

    upload = Op(_files.upload_file)
    get = Op(_files.get_file)
    list = IterOp(_files.list_files, FileObject)
    download = Op(_files.download_file)
    url = Op(_files.file_url)
    delete = Op(_files.delete_file)


class Webhooks(Resource[D]):
    """``client.webhooks``: the account's webhook endpoints and their deliveries."""

    list = IterOp(_webhooks.list_webhooks, WebhookObject)
    create = Op(_webhooks.create_webhook)
    get = Op(_webhooks.get_webhook)
    update = Op(_webhooks.update_webhook)
    delete = Op(_webhooks.delete_webhook)
    rotate_secret = Op(_webhooks.rotate_secret)
    test = Op(_webhooks.test_webhook)
    deliveries = IterOp(_webhooks.list_deliveries, DeliveryObject)
    retry_delivery = Op(_webhooks.retry_delivery)
    callback_secret = Op(_webhooks.callback_secret)


def _run_wait(handle: TaskRun[Any], timeout: float | None = None) -> Plan[TaskObject]:
    """Wait for the task (see ``tasks.wait``); ``timeout`` defaults to the run's."""
    return (yield from _waiting.wait_task(handle, handle.task_id, _pick(timeout, handle)))


def _run_result(handle: TaskRun[Any], timeout: float | None = None) -> Plan[list[dict[str, Any]]]:
    """Wait for the task and return its ``output``; raises as ``wait()`` does."""
    task = yield from _waiting.wait_task(handle, handle.task_id, _pick(timeout, handle))
    return task.output


def _run_refresh(handle: TaskRun[Any]) -> Plan[TaskObject]:
    """The task as it stands now."""
    return (yield from _plans.get_task(handle, handle.task_id))


def _run_cancel(handle: TaskRun[Any]) -> Plan[TaskObject]:
    """Cancel the task (see ``tasks.cancel``)."""
    return (yield from _plans.cancel_task(handle, handle.task_id))


def _pick(timeout: float | None, handle: TaskRun[Any]) -> float | None:
    return timeout if timeout is not None else handle.timeout


class TaskRun(Resource[D]):
    """A task created by ``tasks.run``. ``task_id`` and ``task`` (as created) are
    there at once; ``wait()`` and ``result()`` follow it to its end."""

    def __init__(self, driver: D, config: Config, task: TaskObject, timeout: float | None) -> None:
        super().__init__(driver, config)
        self.task = task
        self.task_id = task.id
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<TaskRun {self.task_id} {self.task.workflow}>"

    wait = Op(_run_wait)
    result = Op(_run_result)
    refresh = Op(_run_refresh)
    cancel = Op(_run_cancel)


class _BaseClient(Generic[D]):
    def __init__(self, driver: D, config: Config, base_url: str) -> None:
        self.base_url = base_url
        self.config = config
        self.workflows: Workflows[D] = Workflows(driver, config)
        self.tasks: Tasks[D] = Tasks(driver, config)
        self.usage: Usage[D] = Usage(driver, config)
        self.files: Files[D] = Files(driver, config)
        self.webhooks: Webhooks[D] = Webhooks(driver, config)
