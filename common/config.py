"""Command-line strings -> typed dataclass configs: the one place that does it.

Extractor configs (``--mfcc.n_mfcc 13``), fusion configs (``--set hidden=128``) and model
configs read from a run directory all go through ``make_config``: each value is turned into
its field's type (from the annotation, else from the default's type), and an unknown field
is either an error naming the valid ones or, where the caller says so, left out.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from mer.common.errors import UsageError

_MISSING = dataclasses.MISSING


def field_types(cls) -> dict[str, Any]:
    """Field name -> resolved type of a dataclass (the annotation strings when unresolvable)."""
    import typing

    try:
        return typing.get_type_hints(cls)
    except Exception:  # a config with unresolvable annotations: fall back to the strings
        return {f.name: f.type for f in dataclasses.fields(cls)}


def _default_of(f: dataclasses.Field):
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return _MISSING


def coerce(value, tp, where: str, default=_MISSING, seq_sep: str = ","):
    """Turn a CLI string (or a Python value) into type ``tp``; a UsageError naming ``where``
    when it cannot be read. ``default`` (the field's default) types bare ``list``/``tuple``
    items and unresolvable annotations; ``seq_sep`` separates sequence items that are not
    written as JSON (``,`` for extractor options, ``:`` for ``--set``, whose values may
    already sit in a comma list)."""
    import types
    import typing

    if isinstance(tp, str):  # an annotation that did not resolve: type it by the default
        tp = type(default) if default is not _MISSING and default is not None else str
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, where, default, seq_sep)
            except UsageError:
                continue
        raise UsageError(f"{where}: cannot read {value!r} as {tp}")
    if not isinstance(value, str):
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    try:
        if tp is bool:
            v = value.strip().lower()
            if v in ("1", "true", "yes", "on"):
                return True
            if v in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if tp in (int, float, str):
            return tp(value)
        if origin in (list, tuple) or tp in (list, tuple):
            try:
                seq = json.loads(value)
                if not isinstance(seq, list):
                    raise ValueError(value)
            except ValueError:
                seq = [s for s in value.split(seq_sep) if s.strip()]
            inner = args[0] if args else (type(default[0]) if isinstance(default, (list, tuple)) and default else str)
            seq = [coerce(s, inner, where) if isinstance(s, str) else s for s in seq]
            return tuple(seq) if (origin is tuple or tp is tuple) else list(seq)
        try:
            return json.loads(value)
        except ValueError:
            return value
    except (TypeError, ValueError):
        raise UsageError(f"{where}: cannot read {value!r} as {getattr(tp, '__name__', tp)}") from None


def make_config(cls, values: dict | None, *, owner: str, option: str, unknown: str = "error", seq_sep: str = ","):
    """``cls(**values)`` with every value coerced to its field's type.

    ``owner`` names the thing configured in messages (``mfcc``, ``fusion concat``); ``option``
    formats the option a field is set with, e.g. ``"--mfcc.{}"`` or ``"--set {}"``.
    ``unknown``: ``"error"`` (a UsageError listing the valid fields) or ``"ignore"`` (the value
    is meant for another config set in the same command, e.g. ``--set`` with two fusions)."""
    values = dict(values or {})
    fs = {f.name: f for f in dataclasses.fields(cls)}
    bad = sorted(set(values) - set(fs))
    if bad and unknown == "error":
        raise UsageError(f"{owner}: unknown config option {', '.join(bad)}; options are: {', '.join(fs)}")
    types_ = field_types(cls)
    kw = {}
    for k, v in values.items():
        if k not in fs:
            continue
        kw[k] = coerce(v, types_.get(k, str), option.format(k), _default_of(fs[k]), seq_sep)
    return cls(**kw)
