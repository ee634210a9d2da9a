"""Typed configuration dataclasses: build them from mappings (YAML, JSON) and ``key=value`` text.

Every configuration in transformerkit is a dataclass with annotated fields. These helpers give
them one behaviour: unknown keys and values of the wrong type raise ``ValueError`` naming the
dotted key (``training.max_tokens``), so a typo in a recipe is an error, not a silent default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar

T = TypeVar("T")


def union_members(hint: Any) -> tuple[Any, ...]:
    """The members of a union annotation (``A | B`` → ``(A, B)``), or ``(hint,)``."""
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the annotation ``hint`` (Literal, unions, int/float/bool/str, lists)."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in typing.get_args(hint))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return isinstance(value, (list, tuple)) and all(matches(v, args[0]) for v in value) if args else True
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def describe(hint: Any) -> str:
    """A readable name for an annotation: ``int or None``, ``'post' | 'pre'``."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(hint))
    if origin in (list, tuple):
        return f"list of {describe(typing.get_args(hint)[0])}"
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


def check_types(obj: Any, prefix: str = "") -> None:
    """Raise ``ValueError`` for the first field of dataclass ``obj`` whose value misfits its annotation."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            continue
        if not matches(value, hints[f.name]):
            raise ValueError(f"{prefix}{f.name} has an invalid value {value!r} (expected {describe(hints[f.name])})")


def from_mapping(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) mapping; unknown keys raise ``ValueError``."""
    if not isinstance(values, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'configuration'} must be a mapping, got {type(values).__name__}")
    for key in values:
        if not isinstance(key, str):
            raise ValueError(f"{prefix}{key!r}: a configuration key must be a name, got {type(key).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown configuration key(s): {', '.join(prefix + k for k in unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        if dataclasses.is_dataclass(hints[name]) and not dataclasses.is_dataclass(value):  # else built already
            value = from_mapping(hints[name], value or {}, f"{prefix}{name}.")
        elif isinstance(value, list) and typing.get_origin(hints[name]) is tuple:
            value = tuple(value)
        kwargs[name] = value
    obj = cls(**kwargs)
    check_types(obj, prefix)
    return obj


def parse_text(key: str, text: str, hint: Any) -> Any:
    """Parse command-line text into a value of annotation ``hint`` (``none`` → None, ``true`` → True …)."""
    candidates = union_members(hint)
    if text.lower() in ("none", "null") and type(None) in candidates:
        return None
    for candidate in candidates:
        if candidate is bool:
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
        elif candidate in (int, float):
            try:
                return candidate(text)
            except ValueError:
                pass
        elif candidate is str:
            return text
        elif typing.get_origin(candidate) is Literal and text in typing.get_args(candidate):
            return text
        elif typing.get_origin(candidate) in (list, tuple):
            item = typing.get_args(candidate)[0]
            inner = text[1:-1] if text[:1] + text[-1:] in ("[]", "()") else text  # YAML's [a, b] or a,b
            return [parse_text(key, part.strip(), item) for part in inner.split(",") if part.strip()]
    raise ValueError(f"{key} has an invalid value {text!r} (expected {describe(hint)})")


def field_hint(cls: type, dotted_key: str, prefix: str = "") -> Any:
    """The annotation of ``dotted_key`` (``training.max_tokens``) in dataclass ``cls`` (errors name
    the key after ``prefix``, the section ``cls`` is)."""
    hint: Any = cls
    walked = [prefix.rstrip(".")] if prefix else []
    for part in dotted_key.split("."):
        walked.append(part)
        if not dataclasses.is_dataclass(hint):
            raise ValueError(f"unknown configuration key: {'.'.join(walked)}")
        hints = typing.get_type_hints(hint)
        if part not in hints:
            raise ValueError(f"unknown configuration key: {'.'.join(walked)}")
        hint = hints[part]
    return hint


def apply_overrides(values: dict[str, Any], cls: type, pairs: list[str], prefix: str = "") -> dict[str, Any]:
    """Apply ``["training.max_steps=100", …]`` to a nested mapping for ``cls``, parsing each value;
    with ``prefix`` (``model.``) ``cls`` is that section, and each key starts with it."""
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        hint = field_hint(cls, key.removeprefix(prefix), prefix)
        node = values
        *parents, leaf = key.removeprefix(prefix).split(".")
        for depth, part in enumerate(parents):
            if node.get(part) is None:  # absent, or an empty section (`training:` with nothing under it)
                node[part] = {}
            if not isinstance(node[part], dict):
                section = ".".join(parents[:depth + 1])
                raise ValueError(f"{section} must be a mapping of settings, got {type(node[part]).__name__}")
            node = node[part]
        node[leaf] = parse_text(key, text.strip(), hint)
    return values
