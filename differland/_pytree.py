"""Frozen dataclasses registered as JAX pytrees (every field is a data leaf or sub-tree)."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import jax

T = TypeVar("T")


def pytree_dataclass(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen dataclass whose fields are all pytree children.

    Fields may hold ``None`` (an empty sub-tree), which is how optional outputs are dropped.
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    jax.tree_util.register_dataclass(cls, data_fields=names, meta_fields=[])

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    cls.replace = replace
    return cls


def field_names(obj_or_cls) -> tuple[str, ...]:
    """Names of a dataclass's fields, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(obj_or_cls))


def as_dict(obj, *, drop_none: bool = True) -> dict:
    """Shallow ``{field: value}`` of a pytree dataclass (no recursion into values)."""
    out = {name: getattr(obj, name) for name in field_names(obj)}
    if drop_none:
        out = {k: v for k, v in out.items() if v is not None}
    return out
