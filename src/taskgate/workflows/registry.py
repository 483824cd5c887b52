"""Finding workflows: the built-ins, the ``taskgate.workflows`` entry points, and
the modules named in ``TASKGATE_WORKFLOWS``."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from taskgate.workflows.sdk import Workflow

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "taskgate.workflows"


class Registry:
    """The workflows one process knows, by name."""

    def __init__(self, workflows: Iterable[Workflow[Any]] = ()) -> None:
        self._by_name: dict[str, Workflow[Any]] = {}
        for wf in workflows:
            self.add(wf)

    @classmethod
    def load(cls, modules: Iterable[str] = (), *, use_entry_points: bool = True) -> Registry:
        registry = cls()
        registry.add_module(importlib.import_module("taskgate.workflows.builtin"))
        if use_entry_points:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                registry.add_module(ep.load())
        for name in modules:
            registry.add_module(importlib.import_module(name))
        return registry

    def add(self, wf: Workflow[Any]) -> None:
        existing = self._by_name.get(wf.name)
        if existing is not None and existing is not wf:
            raise ValueError(f"two workflows are named {wf.name!r}")
        self._by_name[wf.name] = wf

    def add_module(self, module: ModuleType | Any) -> None:
        for value in vars(module).values():
            if isinstance(value, Workflow):
                self.add(value)

    def get(self, name: str) -> Workflow[Any] | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def queues(self) -> list[str]:
        return sorted({wf.queue for wf in self._by_name.values()})

    def __iter__(self) -> Iterator[Workflow[Any]]:
        return iter(sorted(self._by_name.values(), key=lambda wf: wf.name))
