"""Secret arguments: stored in clear in the database (the task needs them), shown nowhere else.

A field of a task's arguments model typed ``SecretStr`` or ``SecretBytes`` (also inside nested
models, lists and optionals) is a secret. Deferring stores its real value; every place that
shows a job's arguments outside the database (API answers, the CLI, log lines, error records)
shows :data:`MASK` instead.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from pydantic import BaseModel, SecretBytes, SecretStr

MASK = "**********"
#: A path step that stands for every item of a list.
EACH = "*"
Path = tuple[str, ...]


def _is_secret(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, SecretStr | SecretBytes)


def _paths_in(annotation: Any, depth: int) -> list[Path]:
    """The secret paths under one annotation (``()`` when the annotation itself is secret)."""
    if depth > 8:
        return []
    if _is_secret(annotation):
        return [()]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(name, *rest) for name, rest in _model_paths(annotation, depth + 1)]
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (Union, types.UnionType, typing.Annotated):
        found = [path for argument in arguments for path in _paths_in(argument, depth + 1)]
        return list(dict.fromkeys(found))
    if origin in (list, tuple, set, frozenset) and arguments:
        return [(EACH, *path) for path in _paths_in(arguments[0], depth + 1)]
    if origin is dict and len(arguments) == 2:
        return [(EACH, *path) for path in _paths_in(arguments[1], depth + 1)]
    return []


def _model_paths(model: type[BaseModel], depth: int) -> list[tuple[str, Path]]:
    return [
        (field.alias or name, path)
        for name, field in model.model_fields.items()
        for path in _paths_in(field.annotation, depth)
    ]


@functools.cache
def secret_paths(model: type[BaseModel]) -> tuple[Path, ...]:
    """Where a model's secrets sit in its JSON (field names, ``*`` for each item)."""
    return tuple((name, *path) for name, path in _model_paths(model, 0))


def _masked(value: Any, path: Path) -> Any:
    if not path:
        return MASK if value is not None else None
    step, rest = path[0], path[1:]
    if step == EACH and isinstance(value, list):
        return [_masked(item, rest) for item in value]
    if step == EACH and isinstance(value, dict):
        return {key: _masked(item, rest) for key, item in value.items()}
    if isinstance(value, dict) and step in value:
        return {**value, step: _masked(value[step], rest)}
    return value


def mask(model: type[BaseModel], args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` with every secret of ``model`` replaced by :data:`MASK` (a copy)."""
    masked: Any = dict(args)
    for path in secret_paths(model):
        masked = _masked(masked, path)
    result: dict[str, Any] = masked
    return result


def reveal(value: Any) -> Any:
    """A model's Python dump with each secret's real value, ready for JSON storage."""
    if isinstance(value, SecretStr | SecretBytes):
        secret = value.get_secret_value()
        return secret.decode() if isinstance(secret, bytes) else secret
    if isinstance(value, dict):
        return {key: reveal(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [reveal(item) for item in value]
    return value
