"""Building a task's input from the command line: ``--input JSON``, ``-i key=value``
and ``--file field=PATH``."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import typer


def parse_input(raw: str | None) -> dict[str, Any]:
    """``--input``: a JSON object (``@FILE`` reads it from a file)."""
    if raw is None:
        return {}
    text = raw
    if raw.startswith("@"):
        try:
            text = Path(raw[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {raw[1:]}: {exc.strerror}") from exc
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise typer.BadParameter(f"must be a JSON object, not {type(value).__name__}")
    return value


def _split(item: str, what: str) -> tuple[str, str]:
    key, equals, value = item.partition("=")
    key = key.strip()
    if not equals or not key:
        raise typer.BadParameter(f"expected {what}, got {item!r}")
    return key, value


def parse_fields(items: Sequence[str]) -> dict[str, Any]:
    """``-i key=value``: the value parsed as JSON when it is JSON (``3``, ``true``,
    ``[1,2]``, ``"quoted"``), else taken as a string. A repeated key keeps its last
    value."""
    fields: dict[str, Any] = {}
    for item in items:
        key, value = _split(item, "key=value")
        try:
            fields[key] = json.loads(value)
        except ValueError:
            fields[key] = value
    return fields


def list_fields(input_schema: dict[str, Any]) -> set[str]:
    """The top-level fields of a workflow's input schema that take a list."""
    found = set()
    for name, spec in input_schema.get("properties", {}).items():
        options = [spec, *spec.get("anyOf", []), *spec.get("oneOf", [])]
        if any(option.get("type") == "array" for option in options):
            found.add(name)
    return found


def parse_files(items: Sequence[str]) -> list[tuple[str, Path]]:
    """``--file field=PATH``: each path must be a readable file (checked before
    anything is uploaded)."""
    found: list[tuple[str, Path]] = []
    for item in items:
        field, raw = _split(item, "field=PATH")
        path = Path(raw).expanduser()
        if not path.is_file():
            raise typer.BadParameter(f"no such file: {raw}", param_hint="--file")
        found.append((field, path))
    return found


def with_files(
    fields: dict[str, Any],
    files: Sequence[tuple[str, Path]],
    upload: Callable[[Path], str],
    list_fields: Collection[str] = (),
) -> dict[str, Any]:
    """``fields`` with each file uploaded and its id in its field; a field named
    more than once, or one of ``list_fields``, becomes a list of ids, in the order
    given."""
    result = dict(fields)
    counts = Counter(field for field, _ in files)
    lists: dict[str, list[str]] = {
        field: [] for field, n in counts.items() if n > 1 or field in list_fields
    }
    for field, path in files:
        file_id = upload(path)
        if field in lists:
            lists[field].append(file_id)
        else:
            result[field] = file_id
    result.update(lists)
    return result
