"""The workflow SDK: everything a workflow may use, and nothing of the server.

A workflow is a function decorated with :func:`workflow`. It receives a
:class:`Context` that carries its validated input and lets it report progress,
notice cancellation, meter usage, warn, and write output files::

    class Input(BaseModel):
        prompt: str

    @workflow("echo", input=Input, estimate=lambda i: Estimate(seconds=1))
    def echo(ctx: Context[Input]) -> dict[str, str]:
        ctx.progress(50, "thinking")
        return {"text": ctx.input.prompt}

A field typed :data:`FileRef` takes a file: an uploaded file's id (``file_…``) or an
http(s) URL that taskgate fetches at submit. Inside the handler,
:meth:`Context.file` gives the local path of its bytes::

    class Input(BaseModel):
        image: FileRef

    def handler(ctx: Context[Input]) -> None:
        picture = Image.open(ctx.file(ctx.input.image))

:data:`ImageRef` and :data:`AudioRef` take only that kind of file (another kind is
a 422 at submit); ``Annotated[TaskOutput, FileKind("audio")]`` takes an output file
of an earlier completed task (``{task_id, index}``). A result may hold a path that
:meth:`Context.output_file` returned; the task's output shows that file's entry,
with its id and a signed link, in its place::

    def handler(ctx: Context[Input]) -> dict[str, Any]:
        video = ctx.output_file("clip.mp4")
        ...  # write the video
        return {"type": "clip", "video": video}  # → "video": {"file_id", "url", …}

Handlers run in a separate executor process. A handler that ignores cancellation
is stopped anyway after the grace period; one that runs past its timeout is killed.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Annotated, Any, Generic, Protocol, TypeVar, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

InputT = TypeVar("InputT", bound=BaseModel)

Result = dict[str, Any] | list[dict[str, Any]] | None

_MILLI = Decimal("0.001")
# Keys of a task's usage object that are not meters.
_RESERVED_METERS = frozenset({"lines", "credits"})


_FILE_ID = re.compile(r"file_[0-9A-HJKMNP-TV-Z]{26}")
_MAX_URL_CHARS = 2048


class _FileRefMarker:
    """Marks a :data:`FileRef` field (found by :func:`file_refs`)."""

    def __repr__(self) -> str:
        return "FILE_REF"


FILE_REF = _FileRefMarker()


@dataclass(frozen=True, slots=True)
class FileKind:
    """Marks a file field that takes only one kind of file (``image``, ``audio``,
    ``video``): another kind is refused at submit with a 422 naming the field."""

    kind: str


def _check_file_ref(value: str) -> str:
    if _FILE_ID.fullmatch(value):
        return value
    if value.startswith(("http://", "https://")) and len(value) <= _MAX_URL_CHARS:
        return value
    raise ValueError("must be a file id (file_…) or an http(s) URL")


#: An input field that takes a file: an uploaded file's id or an http(s) URL. The
#: handler reads it from :meth:`Context.file`.
FileRef = Annotated[
    str,
    AfterValidator(_check_file_ref),
    WithJsonSchema(
        {
            "type": "string",
            "format": "file-ref",
            "description": "An uploaded file's id (file_…) or an http(s) URL to fetch.",
        }
    ),
    FILE_REF,
]


def _kind_ref(kind: str) -> Any:
    return Annotated[
        str,
        AfterValidator(_check_file_ref),
        WithJsonSchema(
            {
                "type": "string",
                "format": "file-ref",
                "contentMediaType": f"{kind}/*",
                "description": f"An uploaded {kind} file's id (file_…) or an http(s) URL of "
                f"one to fetch.",
            }
        ),
        FILE_REF,
        FileKind(kind),
    ]


#: A :data:`FileRef` that takes only an image (PNG, JPEG, WebP, GIF).
ImageRef = _kind_ref("image")
#: A :data:`FileRef` that takes only audio (MP3, WAV, FLAC, Ogg, M4A).
AudioRef = _kind_ref("audio")


class TaskOutput(BaseModel):
    """An input that takes an output file of an earlier completed task of the same
    account: the ``index``-th file (from 0) of the kind the field asks for, such as
    a ``music`` task's second track with ``Annotated[TaskOutput, FileKind("audio")]``
    and index 1. Taskgate resolves it at submit (a 422 naming the field if there
    is no such task or file); the handler reads it with ``ctx.file(value.ref)``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"format": "task-output"})

    task_id: str = Field(pattern=r"^task_[0-9A-HJKMNP-TV-Z]{26}$", description="A task_… id.")
    index: int = Field(default=0, ge=0, le=99, description="Which file of the kind, from 0.")

    @property
    def ref(self) -> str:
        """The key of the file in :meth:`Context.file`."""
        return f"{self.task_id}#{self.index}"


def split_task_ref(ref: str) -> tuple[str, int] | None:
    """``(task id, index)`` of a :class:`TaskOutput` ref, None for a file ref."""
    task_id, sep, index = ref.partition("#")
    if not sep or not task_id.startswith("task_") or not index.isdigit():
        return None
    return task_id, int(index)


def file_refs(
    model: type[BaseModel], data: Mapping[str, Any], prefix: str = "input"
) -> dict[str, str]:
    """The :data:`FileRef` values in an input (as dumped to JSON), by their path
    (``input.images.0``)."""
    found: dict[str, str] = {}
    _walk_model(model, data, prefix, found, {})
    return found


def file_kinds(
    model: type[BaseModel], data: Mapping[str, Any], prefix: str = "input"
) -> dict[str, str]:
    """The kind of file each path of :func:`file_refs` requires (``image``…), for
    the fields that require one (:data:`ImageRef`, :data:`AudioRef`)."""
    kinds: dict[str, str] = {}
    _walk_model(model, data, prefix, {}, kinds)
    return kinds


def _walk_model(
    model: type[BaseModel],
    data: Mapping[str, Any],
    prefix: str,
    found: dict[str, str],
    kinds: dict[str, str],
) -> None:
    for name, info in model.model_fields.items():
        if name in data:
            _collect(
                info.annotation, tuple(info.metadata), data[name], f"{prefix}.{name}", found, kinds
            )


def takes_files(model: type[BaseModel]) -> bool:
    """Whether an input model has a :data:`FileRef` field (at any depth)."""
    schema = json.dumps(model.model_json_schema())
    return '"format": "file-ref"' in schema or '"format": "task-output"' in schema


def _collect(
    annotation: Any,
    metadata: tuple[Any, ...],
    value: Any,
    path: str,
    found: dict[str, str],
    kinds: dict[str, str],
) -> None:
    if FILE_REF in metadata or (
        isinstance(annotation, type) and issubclass(annotation, TaskOutput)
    ):
        if isinstance(value, dict) and isinstance(value.get("task_id"), str):
            value = f"{value['task_id']}#{value.get('index', 0)}"
        if isinstance(value, str):
            found[path] = value
            for mark in metadata:
                if isinstance(mark, FileKind):
                    kinds[path] = mark.kind
        return
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        _collect(args[0], tuple(args[1:]), value, path, found, kinds)
    elif origin in (Union, types.UnionType):
        for arg in args:
            _collect(arg, (), value, path, found, kinds)
    elif origin in (list, tuple, set, frozenset) and isinstance(value, list):
        for index, item in enumerate(value):
            item_type = args[0] if args else Any
            _collect(item_type, (), item, f"{path}.{index}", found, kinds)
    elif origin is dict and isinstance(value, dict) and len(args) == 2:
        for key, item in value.items():
            _collect(args[1], (), item, f"{path}.{key}", found, kinds)
    elif (
        isinstance(annotation, type)
        and issubclass(annotation, BaseModel)
        and isinstance(value, dict)
    ):
        _walk_model(annotation, value, path, found, kinds)


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a run with some input is expected to cost and take."""

    credits: Decimal = Decimal(0)
    seconds: float = 1.0


@dataclass(frozen=True, slots=True)
class Charge:
    """One line of a price: ``quantity`` of ``meter``, counted in ``unit``, costs ``credits``."""

    meter: str
    quantity: float
    unit: str
    credits: Decimal


@dataclass(frozen=True, slots=True)
class Price:
    """What a run costs: its lines, and their total."""

    lines: tuple[Charge, ...] = ()

    @property
    def total(self) -> Decimal:
        return sum((line.credits for line in self.lines), Decimal(0))


#: How a workflow prices a run: from its input and the usage meters it reported.
Pricing = Callable[[Any, Mapping[str, float]], Price]


@dataclass(frozen=True, slots=True)
class Rate:
    """The price of one unit of a meter."""

    unit: str
    credits: Decimal | str

    def __post_init__(self) -> None:
        value = Decimal(self.credits)
        if not value.is_finite() or value < 0:
            raise ValueError(f"a rate is a non-negative amount of credits, not {self.credits!r}")
        object.__setattr__(self, "credits", value)


class Rates:
    """A price list: each meter's quantity times its rate, e.g.
    ``Rates(audio_seconds=Rate("second", "0.02"), image_count=Rate("image", "0.5"))``.

    Meters the run did not report cost nothing; a reported meter without a rate
    is an error in the workflow (it would be given away silently)."""

    def __init__(self, **rates: Rate) -> None:
        self.rates = dict(rates)

    def __call__(self, _input: Any, usage: Mapping[str, float]) -> Price:
        unpriced = set(usage) - set(self.rates)
        if unpriced:
            raise ValueError(f"no rate for the meters {sorted(unpriced)}")
        lines = []
        for meter, rate in self.rates.items():
            quantity = usage.get(meter)
            if quantity is None:
                continue
            credits = Decimal(str(quantity)) * Decimal(rate.credits)
            lines.append(Charge(meter, quantity, rate.unit, credits))
        return Price(tuple(lines))


class WorkflowError(Exception):
    """Fail the task with this code and message. Retried if ``retryable`` and
    attempts are left."""

    def __init__(self, message: str, *, code: str = "workflow_error", retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable


class RetryableError(WorkflowError):
    """A failure worth another attempt (a flaky dependency, say)."""

    def __init__(self, message: str, *, code: str = "retryable_error"):
        super().__init__(message, code=code, retryable=True)


class Cancelled(Exception):
    """Raised by :meth:`Context.check_cancelled` once cancellation was asked for."""


@dataclass(frozen=True, slots=True)
class Workflow(Generic[InputT]):
    """A registered workflow: its metadata, input model, estimate and handler."""

    name: str
    handler: Callable[[Context[InputT]], Result]
    input: type[InputT]
    estimate: Callable[[InputT], Estimate]
    title: str
    description: str
    #: None: a completed run is charged its estimate.
    price: Pricing | None = None
    version: str = "1"
    timeout: float = 3600.0
    max_attempts: int = 3
    queue: str = "default"

    def estimate_for(self, value: InputT) -> Estimate:
        return self.estimate(value)

    def price_for(self, value: InputT, usage: Mapping[str, float]) -> Price:
        """The price of a completed run, each line rounded to 1/1000 credit."""
        if self.price is None:
            flat = Decimal(self.estimate(value).credits)
            price = Price((Charge("run", 1, "run", flat),) if flat else ())
        else:
            price = self.price(value, usage)
        return Price(
            tuple(
                Charge(
                    line.meter,
                    line.quantity,
                    line.unit,
                    Decimal(line.credits).quantize(_MILLI, rounding=ROUND_HALF_UP),
                )
                for line in price.lines
            )
        )


def workflow(
    name: str,
    *,
    input: type[InputT],
    estimate: Callable[[InputT], Estimate] | None = None,
    price: Pricing | None = None,
    title: str | None = None,
    description: str | None = None,
    version: str = "1",
    timeout: float = 3600.0,
    max_attempts: int = 3,
    queue: str = "default",
) -> Callable[[Callable[[Context[InputT]], Result]], Workflow[InputT]]:
    """Declare a workflow. The decorated name becomes a :class:`Workflow`; the
    registry finds it among the attributes of the module that defines it.

    ``estimate`` gives the credits reserved at submit and the expected duration;
    ``price`` (a function of the input and the usage meters, or :class:`Rates`)
    gives what a completed run costs, capped at the reservation. Without it a
    completed run costs its estimate."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if timeout <= 0:
        raise ValueError("timeout must be positive")

    def decorate(handler: Callable[[Context[InputT]], Result]) -> Workflow[InputT]:
        doc = (handler.__doc__ or "").strip()
        return Workflow(
            name=name,
            handler=handler,
            input=input,
            estimate=estimate or (lambda _value: Estimate()),
            price=price,
            title=title or name.replace("-", " ").replace("_", " ").capitalize(),
            description=description or doc,
            version=version,
            timeout=timeout,
            max_attempts=max_attempts,
            queue=queue,
        )

    return decorate


class Channel(Protocol):
    """How a context talks to the worker that runs it (provided by taskgate)."""

    def progress(self, percent: float, stage: str | None, message: str | None) -> None: ...

    def is_cancelled(self) -> bool: ...


@dataclass(slots=True)
class OutputFile:
    name: str
    path: Path
    content_type: str


@dataclass
class Context(Generic[InputT]):
    """What a handler sees of its task."""

    input: InputT
    task_id: str
    attempt: int
    _work_dir: Path
    _channel: Channel
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("taskgate.workflow"))
    _usage: dict[str, float] = field(default_factory=dict)
    _warnings: list[dict[str, Any]] = field(default_factory=list)
    _files: list[OutputFile] = field(default_factory=list)
    _input_files: dict[str, Path] = field(default_factory=dict)

    def progress(
        self, percent: float, stage: str | None = None, message: str | None = None
    ) -> None:
        """Report progress (0–100). Frequent calls are fine: taskgate coalesces them."""
        self._channel.progress(max(0.0, min(100.0, float(percent))), stage, message)

    @property
    def cancelled(self) -> bool:
        """True once cancellation of this task was asked for."""
        return self._channel.is_cancelled()

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if cancellation was asked for."""
        if self._channel.is_cancelled():
            raise Cancelled

    def usage(self, **meters: float) -> None:
        """Add to usage meters, e.g. ``ctx.usage(audio_seconds=30)``. A completed
        run is charged the workflow's price of its meters."""
        for meter, quantity in meters.items():
            if meter in _RESERVED_METERS:
                raise ValueError(f"{meter!r} is not a meter name")
            self._usage[meter] = self._usage.get(meter, 0.0) + float(quantity)

    def warn(self, code: str, message: str, field: str | None = None) -> None:
        """Attach a warning to the task (it still completes)."""
        self._warnings.append({"code": code, "message": message, "field": field})

    def file(self, ref: str) -> Path:
        """The local path of an input file (the value of a :data:`FileRef` field).
        Read it, do not change it."""
        try:
            return self._input_files[ref]
        except KeyError:
            raise ValueError(f"{ref!r} is not a file input of this task") from None

    @property
    def output_dir(self) -> Path:
        """A private scratch directory for this attempt (created on first use).

        Only files named through :meth:`output_file` become outputs."""
        self._work_dir.mkdir(parents=True, exist_ok=True)
        return self._work_dir

    def output_file(self, name: str, content_type: str | None = None) -> Path:
        """A path to write an output file to; the file becomes part of the output.

        A result may hold the path returned here (``{"audio": path}``): the task's
        output then shows the file's entry there (``{type, file_id, url, …}``)
        instead of listing it on its own."""
        safe = Path(name).name
        if not safe or safe in {".", ".."}:
            raise ValueError(f"not a file name: {name!r}")
        guessed = content_type or mimetypes.guess_type(safe)[0] or "application/octet-stream"
        path = self.output_dir / safe
        self._files.append(OutputFile(safe, path, guessed))
        return path


__all__ = [
    "AudioRef",
    "Cancelled",
    "Channel",
    "Charge",
    "Context",
    "Estimate",
    "FileKind",
    "FileRef",
    "ImageRef",
    "OutputFile",
    "Price",
    "Pricing",
    "Rate",
    "Rates",
    "Result",
    "RetryableError",
    "TaskOutput",
    "Workflow",
    "WorkflowError",
    "file_kinds",
    "file_refs",
    "split_task_ref",
    "takes_files",
    "workflow",
]
