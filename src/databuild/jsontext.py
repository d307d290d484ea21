"""Compact JSON text, as the event log stores it and the service answers it."""

from __future__ import annotations

import json

import orjson


def compact_utf8(value: object) -> bytes:
    """``value`` (plain JSON values) as compact JSON in UTF-8, without spaces.

    orjson writes an event's body in a ninth of the time the standard library's C encoder
    takes (0.20 against 1.81 µs), and every event pays it on its way to the log. What orjson
    refuses, the standard library writes: a string with a lone surrogate (escaped, as it
    has no UTF-8), an integer past 64 bits, a key that is not a string. Anything else that
    is not JSON raises TypeError, from either.
    """
    try:
        return orjson.dumps(value, default=_tuple)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":")).encode("ascii")


def _tuple(value: object) -> tuple[object, ...]:
    """orjson writes tuples, but not a subclass of one (``model.Refs``): as the tuple it is."""
    if isinstance(value, tuple):
        return tuple(value)
    raise TypeError


def compact(value: object) -> str:
    """``compact_utf8(value)`` as text."""
    return compact_utf8(value).decode()
