"""A small toolkit that makes dataclasses the single source of truth for an API.

Each spec type is a frozen dataclass whose fields carry their description,
default and bounds in ``field(metadata=...)``. From those one definition we get
both directions:

* :func:`parse` turns a plain dict (what ``kubectl`` sent) into typed objects,
  applying defaults and checking types and bounds, with errors that name the
  field path (``spec.gpu.count: must be >= 0``);
* :func:`openapi` turns the dataclass into the structural OpenAPI v3 schema the
  CRD needs, with descriptions, defaults, bounds and the CEL rules declared on
  the class.

Cross-field rules are written twice on purpose, once in CEL (so the apiserver
rejects at ``kubectl apply``) and once in Python (so ``sluice render`` and the
operator give the same message offline). ``tests/unit/test_api_rules.py`` checks
the two agree on a table of invalid specs, and the integration tests send the
same table to a real apiserver.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, Union, get_args, get_origin

T = TypeVar("T")

MISSING = dataclasses.MISSING


class SpecError(ValueError):
    """A spec that cannot be served, with the path of the offending field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


@dataclasses.dataclass(frozen=True)
class Rule:
    """A cross-field rule: CEL for the apiserver, a Python twin for offline checks."""

    cel: str
    message: str
    check: Callable[[Any], bool]
    # The CEL rule's fieldPath (relative to the object), if it points at one field.
    field_path: str | None = None
    # Offline only: what exactly broke the rule, appended to the message.
    detail: Callable[[Any], str] | None = None

    def error(self, value: Any) -> str:
        return f"{self.message}: {self.detail(value)}" if self.detail else self.message


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def spec_field(
    description: str,
    *,
    default: Any = MISSING,
    default_factory: Callable[[], Any] | Any = MISSING,
    minimum: float | None = None,
    maximum: float | None = None,
    pattern: str | None = None,
    enum: tuple[str, ...] | None = None,
    min_items: int | None = None,
    max_items: int | None = None,
    max_length: int | None = None,
    min_length: int | None = None,
    max_properties: int | None = None,
    value_pattern: str | None = None,
    value_max_length: int | None = None,
    rules: tuple[Rule, ...] = (),
    int_or_string: bool = False,
    preserve_unknown: bool = False,
    list_type: str | None = None,
    list_map_keys: tuple[str, ...] | None = None,
    json_name: str | None = None,
    schema_default: Any = MISSING,
    timestamp: bool = False,
) -> Any:
    """Declare a field with everything both the parser and the CRD need.

    ``schema_default`` puts a default into the CRD as well. We do that only for
    nothing, on purpose: an apiserver-side default rewrites the user's object,
    which Argo CD then shows as drift (KServe's defaulting webhook: kserve#2232).
    Defaults live in the parser and in ``status``.

    ``rules`` are field-level rules: CEL with ``self`` bound to the field's value
    (placed in the field's own ``x-kubernetes-validations``, so the apiserver's
    message names the field) and a Python twin called with the parsed value.
    ``value_pattern``/``value_max_length`` bound the values of a map field;
    for a list field, ``pattern``, ``min_length`` and ``max_length`` apply to
    each item.

    ``timestamp`` marks a ``float`` field that holds epoch seconds in Python and
    an RFC 3339 string on the wire (:func:`format_time`): the one timestamp
    format of status.
    """
    meta: dict[str, Any] = {
        "description": description,
        "minimum": minimum,
        "maximum": maximum,
        "pattern": pattern,
        "enum": enum,
        "min_items": min_items,
        "max_items": max_items,
        "max_length": max_length,
        "min_length": min_length,
        "max_properties": max_properties,
        "value_pattern": value_pattern,
        "value_max_length": value_max_length,
        "rules": tuple(rules),
        "int_or_string": int_or_string,
        "preserve_unknown": preserve_unknown,
        "list_type": list_type,
        "list_map_keys": list_map_keys,
        "json_name": json_name,
        "schema_default": schema_default,
        "timestamp": timestamp,
    }
    kwargs: dict[str, Any] = {"metadata": meta}
    if default is not MISSING:
        kwargs["default"] = default
    if default_factory is not MISSING:
        kwargs["default_factory"] = default_factory
    return dataclasses.field(**kwargs)


def rules_of(cls: type) -> tuple[Rule, ...]:
    return tuple(cls.__dict__.get("RULES", ()))


def _json_name(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("json_name") or camel(f.name)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _hints(cls: Any) -> dict[str, Any]:
    return _cached_hints(cls)


@functools.cache
def _cached_hints(cls: Any) -> dict[str, Any]:
    # Resolving annotations is most of a status load's time: once per class.
    return typing.get_type_hints(cls)


# --------------------------------------------------------------------- parsing


def parse(cls: type[T], data: Any, path: str = "") -> T:
    """Build ``cls`` from a plain dict, applying defaults and checking bounds."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SpecError(path, f"must be an object, got {type(data).__name__}")
    hints = _hints(cls)
    known = {_json_name(f): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SpecError(path, f"unknown field(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for jname, f in known.items():
        fpath = f"{path}.{jname}" if path else jname
        if jname in data and data[jname] is not None:
            value = _parse_value(hints[f.name], data[jname], fpath, f.metadata)
            for rule in f.metadata.get("rules") or ():
                if not rule.check(value):
                    raise SpecError(fpath, rule.error(value))
            values[f.name] = value
        elif f.default is MISSING and f.default_factory is MISSING:
            raise SpecError(fpath, "is required")
    obj = cls(**values)
    for rule in rules_of(cls):
        if not rule.check(obj):
            where = (
                f"{path}.{rule.field_path}"
                if rule.field_path and path
                else (rule.field_path or path)
            )
            raise SpecError(where, rule.error(obj))
    return obj


def _parse_value(tp: Any, value: Any, path: str, meta: Mapping[str, Any]) -> Any:
    tp, _ = _unwrap_optional(tp)
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, path)  # type: ignore[arg-type]
    if origin is list or origin is tuple:
        (item_tp, *_rest) = get_args(tp)
        if not isinstance(value, list):
            raise SpecError(path, f"must be a list, got {type(value).__name__}")
        if meta.get("min_items") is not None and len(value) < meta["min_items"]:
            raise SpecError(path, f"must have at least {meta['min_items']} item(s)")
        if meta.get("max_items") is not None and len(value) > meta["max_items"]:
            raise SpecError(path, f"must have at most {meta['max_items']} item(s)")
        item_meta = {k: v for k, v in meta.items() if k in _ITEM_KEYS}
        items = [_parse_value(item_tp, v, f"{path}[{i}]", item_meta) for i, v in enumerate(value)]
        return tuple(items)
    if origin is dict or origin is Mapping:
        if not isinstance(value, Mapping):
            raise SpecError(path, f"must be an object, got {type(value).__name__}")
        if meta.get("max_properties") is not None and len(value) > meta["max_properties"]:
            raise SpecError(path, f"must have at most {meta['max_properties']} entries")
        if meta.get("preserve_unknown"):
            return dict(value)
        _, val_tp = get_args(tp)
        return {
            str(k): _parse_value(val_tp, v, f"{path}.{k}", _value_meta(meta))
            for k, v in value.items()
        }
    if tp is Any:
        return value
    if meta.get("int_or_string"):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise SpecError(path, "must be an integer or a string")
        value = str(value)
    elif tp is bool:
        if not isinstance(value, bool):
            raise SpecError(path, "must be true or false")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(path, f"must be an integer, got {value!r}")
        if not -(2**63) <= value < 2**63:  # what the apiserver takes for an integer
            raise SpecError(path, f"must be an integer (64-bit), got {value}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(path, f"must be a number, got {value!r}")
        value = float(value)
    elif tp is str and not isinstance(value, str):
        raise SpecError(path, f"must be a string, got {value!r}")
    _check_scalar(value, path, meta)
    return value


_ITEM_KEYS = ("minimum", "maximum", "pattern", "min_length", "max_length")


def _value_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if meta.get("value_pattern") is not None:
        out["pattern"] = meta["value_pattern"]
    if meta.get("value_max_length") is not None:
        out["max_length"] = meta["value_max_length"]
    return out


def _check_scalar(value: Any, path: str, meta: Mapping[str, Any]) -> None:
    if meta.get("minimum") is not None and value < meta["minimum"]:
        raise SpecError(path, f"must be >= {_num(meta['minimum'])}, got {value}")
    if meta.get("maximum") is not None and value > meta["maximum"]:
        raise SpecError(path, f"must be <= {_num(meta['maximum'])}, got {value}")
    if meta.get("enum") and value not in meta["enum"]:
        raise SpecError(path, f"must be one of {', '.join(meta['enum'])}, got {value!r}")
    if meta.get("pattern") and not re.fullmatch(meta["pattern"], str(value)):
        raise SpecError(path, f"{value!r} does not match {meta['pattern']}")
    if meta.get("max_length") is not None and len(str(value)) > meta["max_length"]:
        raise SpecError(path, f"must be at most {meta['max_length']} characters")
    if meta.get("min_length") is not None and len(str(value)) < meta["min_length"]:
        raise SpecError(path, f"must be at least {meta['min_length']} character(s)")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def to_dict(obj: Any, *, omit_empty: bool = False) -> Any:
    """The inverse of :func:`parse` and :func:`load`: camelCase plain data,
    defaults included. Timestamp fields become RFC 3339 strings. ``omit_empty``
    also leaves out empty lists (status: a field nobody set is absent)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if v is None or (omit_empty and isinstance(v, (list, tuple)) and not v):
                continue
            if f.metadata.get("timestamp"):
                out[_json_name(f)] = format_time(float(v))
            else:
                out[_json_name(f)] = to_dict(v, omit_empty=omit_empty)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_dict(v, omit_empty=omit_empty) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v, omit_empty=omit_empty) for k, v in obj.items()}
    return obj


def load(cls: type[T], data: Any) -> T:
    """Build ``cls`` from data the operator wrote itself (status), leniently.

    Unlike :func:`parse` this checks no bounds and ignores unknown keys: status
    written by an older operator must still load. A value that does not fit its
    type falls back to the field's default (the apiserver's structural schema
    already pruned anything that is not of the declared type). Each class's
    decoder is built once (type hints are slow to resolve).
    """
    out: T = _loader(typing.cast(type, cls))(data)
    return out


Decoder = Callable[[Any], Any]


@functools.cache
def _loader(cls: type) -> Decoder:
    hints = _hints(cls)
    plan = [
        (_json_name(f), f.name, _decoder(hints[f.name], f.metadata))
        for f in dataclasses.fields(cls)
    ]

    def decode(data: Any) -> Any:
        if not isinstance(data, Mapping):
            data = {}
        values: dict[str, Any] = {}
        for jname, name, dec in plan:
            raw = data.get(jname)
            if raw is None:
                continue
            try:
                values[name] = dec(raw)
            except (TypeError, ValueError):
                continue
        return cls(**values)

    return decode


def _decoder(tp: Any, meta: Mapping[str, Any]) -> Decoder:
    tp, _ = _unwrap_optional(tp)
    origin = get_origin(tp)
    if meta.get("timestamp"):
        return _timestamp
    if dataclasses.is_dataclass(tp):
        return _loader(tp)  # type: ignore[arg-type]
    if origin is list or origin is tuple:
        (item_tp, *_rest) = get_args(tp)
        item = _decoder(item_tp, {})

        def items(value: Any) -> tuple[Any, ...]:
            if not isinstance(value, list | tuple):
                raise TypeError("not a list")
            return tuple(item(v) for v in value)

        return items
    if origin is dict or origin is Mapping:
        return _mapping
    if tp is bool:
        return _boolean
    if tp in (int, float, str):
        return tp  # type: ignore[no-any-return]
    return _identity


def _timestamp(value: Any) -> float:
    t = parse_time(value)
    if t is None:
        raise ValueError(f"not a timestamp: {value!r}")
    return t


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError("not an object")
    return dict(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("not a boolean")
    return value


def _identity(value: Any) -> Any:
    return value


# ------------------------------------------------------------------------ time


def format_time(t: float) -> str:
    """Epoch seconds as RFC 3339 UTC with milliseconds: every status timestamp."""
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def parse_time(s: Any) -> float | None:
    """RFC 3339 (as written by :func:`format_time` or Kubernetes) to epoch seconds.

    Also takes the ``datetime`` objects the kubernetes client hands back."""
    if isinstance(s, dt.datetime):
        d = s
    elif isinstance(s, str) and s:
        try:
            d = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    return d.timestamp()


# ------------------------------------------------------------- OpenAPI schema


def openapi(cls: type) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a spec dataclass."""
    hints = _hints(cls)
    props: dict[str, Any] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        jname = _json_name(f)
        props[jname] = _schema_of(hints[f.name], f.metadata)
        if f.default is MISSING and f.default_factory is MISSING:
            required.append(jname)
    schema: dict[str, Any] = {
        "type": "object",
        "description": _doc(cls),
        "properties": props,
    }
    if required:
        schema["required"] = required
    rules = rules_of(cls)
    if rules:
        schema["x-kubernetes-validations"] = [_cel(r) for r in rules]
    return schema


def _cel(r: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"rule": r.cel, "message": r.message}
    if r.field_path:
        out["fieldPath"] = "." + r.field_path
    return out


def _doc(cls: type) -> str:
    return " ".join((cls.__doc__ or "").split())


def _schema_of(tp: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    tp, _ = _unwrap_optional(tp)
    origin = get_origin(tp)
    s: dict[str, Any]
    if dataclasses.is_dataclass(tp):
        s = openapi(tp)  # type: ignore[arg-type]
        # The field's own description says what the field is for; the class's
        # says what the type is. Prefer the field's where both exist.
        if meta.get("description"):
            s["description"] = meta["description"]
        return _with_rules(s, meta)
    if origin is list or origin is tuple:
        (item_tp, *_rest) = get_args(tp)
        item_meta = {k: v for k, v in meta.items() if k in _ITEM_KEYS}
        item_meta["description"] = ""
        items = _schema_of(item_tp, item_meta)
        if not items.get("description"):
            items.pop("description", None)
        s = {"type": "array", "items": items}
        if meta.get("min_items") is not None:
            s["minItems"] = meta["min_items"]
        if meta.get("max_items") is not None:
            s["maxItems"] = meta["max_items"]
        if meta.get("list_type"):
            s["x-kubernetes-list-type"] = meta["list_type"]
        if meta.get("list_map_keys"):
            s["x-kubernetes-list-map-keys"] = list(meta["list_map_keys"])
    elif origin is dict or origin is Mapping:
        if meta.get("preserve_unknown"):
            s = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        else:
            _, val_tp = get_args(tp)
            s = {"type": "object", "additionalProperties": _schema_of(val_tp, _value_meta(meta))}
        if meta.get("max_properties") is not None:
            s["maxProperties"] = meta["max_properties"]
    elif tp is Any:
        s = {"x-kubernetes-preserve-unknown-fields": True}
    elif meta.get("timestamp"):
        s = {"type": "string"}
    elif meta.get("int_or_string"):
        s = {"x-kubernetes-int-or-string": True}
    elif tp is bool:
        s = {"type": "boolean"}
    elif tp is int:
        s = {"type": "integer"}
    elif tp is float:
        s = {"type": "number"}
    elif tp is str:
        s = {"type": "string"}
    else:  # pragma: no cover - a programming error in the spec types
        raise TypeError(f"no schema for {tp!r}")
    if meta.get("description"):
        s["description"] = meta["description"]
    for key, jkey in (
        ("minimum", "minimum"),
        ("maximum", "maximum"),
        ("pattern", "pattern"),
        ("max_length", "maxLength"),
        ("min_length", "minLength"),
    ):
        if meta.get(key) is not None and origin not in (list, tuple):
            s[jkey] = meta[key]
    if meta.get("enum") and origin not in (list, tuple):
        s["enum"] = list(meta["enum"])
    if meta.get("schema_default", MISSING) is not MISSING:
        s["default"] = meta["schema_default"]
    return _with_rules(s, meta)


def _with_rules(s: dict[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    if meta.get("rules"):
        s["x-kubernetes-validations"] = [
            *s.get("x-kubernetes-validations", []),
            *(_cel(r) for r in meta["rules"]),
        ]
    return s
