"""Server-sent events: the line parser, and the events of a task's stream."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pydantic import BaseModel

from taskgate.payloads import TaskObject

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
TERMINAL_TYPES = frozenset({"task.completed", "task.failed", "task.cancelled"})


class TaskEvent(BaseModel):
    """One event of a task's stream: the first is a ``task.snapshot`` of the task as
    it stands, then one per change (``task.started``, ``task.progress``…), ending
    with a terminal one (``task.completed``, ``task.failed``, ``task.cancelled``)."""

    #: The stream's ``id:``, the task's sequence number: resume after it with
    #: ``tasks.stream(task_id, last_event_id=event.sequence)``.
    sequence: int
    #: The event's ``evt_`` id (None for the snapshot).
    id: str | None
    type: str
    created_at: str
    #: The task as of this event.
    data: TaskObject

    @property
    def terminal(self) -> bool:
        """Whether the task has ended with this event (the stream closes after it)."""
        return self.type in TERMINAL_TYPES or (
            self.type == "task.snapshot" and self.data.status in TERMINAL_STATUSES
        )


@dataclass
class Message:
    """One dispatched server-sent event."""

    id: str | None
    event: str
    data: str


@dataclass
class SseParser:
    """Feeds on lines (without their endings) and gives a :class:`Message` at each
    blank line that ends one (the ``text/event-stream`` rules: ``:`` comments,
    ``field: value`` with one optional space, ``data`` lines joined by newlines)."""

    last_id: str | None = None
    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _seen: bool = False

    def feed(self, line: str) -> Message | None:
        if line == "":
            if not self._seen:
                return None
            message = Message(self.last_id, self._event or "message", "\n".join(self._data))
            self._event, self._data, self._seen = "", [], False
            return message
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        else:
            return None  # retry and unknown fields do not start an event
        self._seen = True
        return None


def task_event(message: Message) -> TaskEvent:
    """A task stream's message as a :class:`TaskEvent` (its ``id:`` is the sequence)."""
    payload = json.loads(message.data)
    if not isinstance(payload, dict):
        raise ValueError(f"an event's data is an object, not {message.data[:100]!r}")
    return TaskEvent.model_validate({**payload, "sequence": int(message.id or "0")})
