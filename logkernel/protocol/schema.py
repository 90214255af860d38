"""Every message of every offered version, derived from Kafka's own message schemas.

The ``kio`` package carries Python types generated from Apache Kafka's JSON message schemas
(one frozen dataclass per message, version and nested struct, with each field's wire type)
and a native decoder for them. This module is the one place that uses it:

- ``decode_request`` turns a request body into kio's dataclass (decoded in Rust, ~1 us for
  a small request). Errors become ``MalformedMessage``.
- ``encode_response`` builds the response dataclass from plain Python data (dicts, lists,
  ints in milliseconds, 16-byte ids) and encodes it. The conversion is derived from the
  dataclasses' type hints, so handlers never spell per-version layouts: a field a version
  lacks is ignored, a field left out takes the schema's default (or zero, empty, null).

kio's encoder is pure Python and slow for big messages (~160 us for a 256 KiB fetch
response); the messages on the data path have hand-written codecs in ``hot`` that the tests
check byte for byte against this module.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import types
import typing
import uuid
from collections.abc import Callable, Mapping
from enum import IntEnum
from functools import cache
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer
from kio.serial.errors import SerialError

from logkernel.protocol.primitives import MalformedMessage, read_uvarint, skip_tagged_fields

Entity = Any  # kio's generated dataclasses share no base class
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


@cache
def request_type(api_key: int, version: int) -> type:
    return load_request_schema(api_key, version)


@cache
def response_type(api_key: int, version: int) -> type:
    return load_response_schema(api_key, version)


@cache
def _reader(cls: type) -> Callable[[Any, int], tuple[Any, int]]:
    return entity_reader(cls)


@cache
def _writer(cls: type) -> Callable[[Any, Any], None]:
    return entity_writer(cls)


def has_schema(api_key: int, version: int) -> bool:
    try:
        request_type(api_key, version)
        return True
    except Exception:
        return False


def decode_request(api_key: int, version: int, body: memoryview | bytes) -> Entity:
    """The request body as kio's dataclass. Raises MalformedMessage if it does not parse."""
    cls = request_type(api_key, version)
    data = bytes(body)
    loose_booleans = check_bounds(cls, data)
    if loose_booleans:
        # Kafka reads a boolean as "byte != 0"; kio accepts only 0 and 1. A client that
        # sends 2 for true is understood by Kafka, so it is here too.
        fixed = bytearray(data)
        for position in loose_booleans:
            fixed[position] = 1
        data = bytes(fixed)
    try:
        entity, _consumed = _reader(cls)(data, 0)
    except (SerialError, ValueError, TypeError, OverflowError, IndexError, KeyError) as exc:
        # kio's native reader raises KeyError for a tagged field it does not know.
        raise MalformedMessage(f"the body does not parse as {cls.__name__} v{version}: "
                               f"{type(exc).__name__}: {exc}") from None
    return entity


# ---- bounds, before kio sees a request ------------------------------------------------------
#
# kio's native reader sizes each array from the count the message declares, before reading
# any element: a hostile count (found by fuzzing: 0x33xxxxxx elements) makes it allocate
# hundreds of gigabytes, and an allocation failure in Rust aborts the whole process. So every
# request is first walked here, without building anything: each length and count must fit
# in the bytes that remain (every element takes at least one byte), and the walk reads every
# element, so kio only ever sees a message whose sizes are consistent with its length.

_FIXED_SIZES = {"int8": 1, "bool": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4,
                "timedelta_i32": 4, "int64": 8, "timedelta_i64": 8, "datetime_i64": 8,
                "float64": 8, "error_code": 2, "uuid": 16}


def check_bounds(cls: Any, body: memoryview | bytes) -> list[int]:
    """Raises MalformedMessage unless every length and count in ``body`` fits the message.
    Returns the positions of booleans written as a byte other than 0 or 1 (true to Kafka)."""
    view = memoryview(body).cast("B")
    loose_booleans: list[int] = []
    _walk(cls, view, 0, loose_booleans)
    return loose_booleans


def _walk(cls: Any, buf: memoryview, pos: int, loose_booleans: list[int]) -> int:
    flexible = bool(getattr(cls, "__flexible__", False))
    for name, kind, item, item_kind, nullable in field_layout(cls):
        if kind == "tagged":
            continue  # in the tagged-field section, skipped (with bounds) below
        if kind == "array":
            count, pos = _length(buf, pos, flexible, wide=True, what=name)
            if count < 0 and not nullable:
                raise MalformedMessage(f"field {name!r} is null, which the schema does not allow")
            for _ in range(max(count, 0)):
                pos = _walk(item, buf, pos, loose_booleans) if item_kind == "struct" else \
                    _value(item_kind, buf, pos, flexible, name, False)
        elif kind == "struct":
            pos = _walk(item, buf, pos, loose_booleans)
        elif kind == "bool":
            if pos >= len(buf):
                raise MalformedMessage(f"field {name!r} runs past the end of the request")
            if buf[pos] > 1:
                loose_booleans.append(pos)
            pos += 1
        else:
            pos = _value(kind, buf, pos, flexible, name, nullable)
    if flexible:
        pos = skip_tagged_fields(buf, pos)
    return pos


def _value(kind: str, buf: memoryview, pos: int, flexible: bool, name: str, nullable: bool) -> int:
    size = _FIXED_SIZES.get(kind)
    if size is None:  # string, bytes, records: a length, then that many bytes
        size, pos = _length(buf, pos, flexible, wide=kind != "string", what=name)
        if size < 0 and not nullable:
            raise MalformedMessage(f"field {name!r} is null, which the schema does not allow")
        size = max(size, 0)
    if pos + size > len(buf):
        raise MalformedMessage(f"field {name!r} runs past the end of the request")
    return pos + size


def _length(buf: memoryview, pos: int, flexible: bool, *, wide: bool, what: str) -> tuple[int, int]:
    """A length or count: -1 (null) or one that fits in what remains."""
    if flexible:
        raw, pos = read_uvarint(buf, pos)
        value = raw - 1
    else:
        size = 4 if wide else 2
        if pos + size > len(buf):
            raise MalformedMessage(f"field {what!r} runs past the end of the request")
        value = int.from_bytes(buf[pos:pos + size], "big", signed=True)
        pos += size
    if value < -1 or value > len(buf) - pos:
        raise MalformedMessage(f"field {what!r} declares length {value}, but only "
                               f"{len(buf) - pos} bytes remain")
    return value, pos


@cache
def field_layout(cls: Any) -> list[tuple[str, str, Any, str, bool]]:
    """(name, kind, element type, element kind, nullable) per field of a kio message or
    struct class, in wire order, from kio's metadata: kind is a Kafka type name ("int32",
    "string", "records", ...), "array", "struct" or "tagged". The bounds walk reads
    requests with it; the fuzzer (tests/reliability/test_fuzz.py) aims its mutations."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, str, Any, str, bool]] = []
    for f in dataclasses.fields(cls):
        if "tag" in f.metadata:
            out.append((f.name, "tagged", None, "", True))
            continue
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = False
        if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
            hint = args[0]
            nullable = True
        kafka_type = f.metadata.get("kafka_type")
        if typing.get_origin(hint) is tuple:
            element = typing.get_args(hint)[0]
            if dataclasses.is_dataclass(element):
                out.append((f.name, "array", element, "struct", nullable))
            else:
                out.append((f.name, "array", None, str(kafka_type), nullable))
        elif dataclasses.is_dataclass(hint):
            out.append((f.name, "struct", hint, "", nullable))
        else:
            out.append((f.name, str(kafka_type), None, "", nullable))
    return out


def encode_response(api_key: int, version: int, data: Mapping[str, Any]) -> bytes:
    """Encodes the response body described by ``data`` (see ``build``)."""
    cls = response_type(api_key, version)
    out = io.BytesIO()
    _writer(cls)(out, build(cls, data))
    return out.getvalue()


def encode_entity(entity: Entity) -> bytes:
    out = io.BytesIO()
    cls: Any = type(entity)
    _writer(cls)(out, entity)
    return out.getvalue()


# ---- building kio dataclasses from plain data -------------------------------------------

def build(cls: type, data: Mapping[str, Any] | Entity) -> Entity:
    """An instance of kio dataclass ``cls`` from a mapping of plain values. Keys the class
    does not have are ignored (so one dict serves every version); missing fields take their
    schema default, else zero / empty / null. Nested structs are mappings or instances."""
    if isinstance(data, cls):
        return data
    kwargs = {}
    for name, convert, default in _plan(cls):
        value = data.get(name, dataclasses.MISSING)
        if value is dataclasses.MISSING:
            if default is dataclasses.MISSING:
                continue
            kwargs[name] = default
        else:
            kwargs[name] = convert(value)
    return cls(**kwargs)


@cache
def _plan(cls: type) -> list[tuple[str, Callable[[Any], Any], Any]]:
    hints = typing.get_type_hints(cls)
    plan = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        convert, empty = _converter(hint)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = empty
        plan.append((f.name, convert, default))
    return plan


def _identity(value: Any) -> Any:
    return value


def _converter(hint: Any) -> tuple[Callable[[Any], Any], Any]:
    """(convert plain value -> field value, value for an absent field) for one type hint."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        convert, _ = _converter(inner)
        return (lambda v: None if v is None else convert(v)), None
    if origin is tuple:
        item = args[0]
        item_convert, _ = _converter(item)
        return (lambda v: tuple(item_convert(x) for x in v)), ()
    if dataclasses.is_dataclass(hint):
        target: Any = hint
        return (lambda v: build(target, v)), dataclasses.MISSING
    if isinstance(hint, type):
        if issubclass(hint, datetime.datetime):  # milliseconds since the epoch (-1: none)
            return (lambda v: v if isinstance(v, datetime.datetime)
                    else _EPOCH + datetime.timedelta(milliseconds=v)), _EPOCH
        if issubclass(hint, datetime.timedelta):
            return (lambda v: v if isinstance(v, datetime.timedelta)
                    else datetime.timedelta(milliseconds=v)), datetime.timedelta(0)
        if issubclass(hint, IntEnum):
            return hint, hint(0)
        if issubclass(hint, uuid.UUID):
            return (lambda v: v if isinstance(v, uuid.UUID) else uuid.UUID(bytes=bytes(v))), \
                uuid.UUID(int=0)
        if issubclass(hint, bool):
            return bool, False
        if issubclass(hint, int):
            return int, 0
        if issubclass(hint, str):
            return str, ""
        if issubclass(hint, bytes):
            return bytes, b""
        if issubclass(hint, float):
            return float, 0.0
    return _identity, dataclasses.MISSING
