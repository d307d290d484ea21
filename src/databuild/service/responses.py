"""JSON bodies of the API: documents, errors ``{"error": {"code", "message"}}`` and input checks."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, TypeVar
from urllib.parse import unquote

from twisted.internet.defer import Deferred, succeed
from twisted.web.iweb import IRequest

from databuild.jsontext import compact, compact_utf8
from databuild.slices import collect_in_slices

MAX_BODY_BYTES = 1024 * 1024
MAX_BUILD_BODY_BYTES = 16 * 1024 * 1024
"""The limit for a build or analyze request (``BUILD_PATHS``), which may carry 100,000 refs."""
BUILD_PATHS = frozenset({b"/api/v1/cli/build", b"/api/v1/builds", b"/api/v1/analyze"})
MAX_JSON_DEPTH = 64
MAX_INT = 2**63 - 1
"""The largest whole number a parameter may hold (what the event log's databases store)."""
JSON_TYPE = b"application/json; charset=utf-8"
_Default = TypeVar("_Default", int, None)
_READ_AS_JSON = {b"application/json", b"application/x-www-form-urlencoded", b"text/plain"}
_JSON_TOKEN = re.compile(rb'\\.|["\[\]{}]')
"""What matters to the nesting depth of JSON text: escapes, quotes and brackets."""


class ApiError(Exception):
    """A request the API answers with an error status and a message naming the problem."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    """A 400 error saying ``message``."""
    return ApiError(400, code, message)


def body_limit(path: bytes) -> int:
    """The largest body a request to ``path`` may send (SPEC §5.4)."""
    return MAX_BUILD_BODY_BYTES if path in BUILD_PATHS else MAX_BODY_BYTES


def body_too_large(limit: int) -> ApiError:
    """The 413 error for a body over ``limit`` bytes."""
    return ApiError(
        413,
        "body_too_large",
        f"request body is over {limit} bytes ({limit // (1024 * 1024)} MiB), the limit",
    )


def json_bytes(document: object) -> bytes:
    """``document`` as compact UTF-8 JSON."""
    return compact_utf8(document)


LONG_LIST = 1000
"""A list longer than this in a document is encoded an item at a time (``json_in_slices``)."""


def json_in_slices(document: dict[str, Any]) -> Deferred[bytes]:
    """``json_bytes(document)``, a slice of time at a time if it holds a long list.

    The show of a build of 100,000 runs is about 30 MB of JSON: encoded in one go it held the
    reactor for 0.5-0.9 s (docs/performance.md). Its long lists (at the top, or in a document
    at the top: an analysis's ``job_graph``) are encoded an item at a time in slices; the text
    is the same.
    """
    if not _holds_long_list(document, 2):
        return succeed(json_bytes(document))
    return collect_in_slices(_pieces(document)).addCallback(
        lambda pieces: "".join(pieces).encode("utf-8")
    )


def _holds_long_list(document: dict[str, Any], depth: int) -> bool:
    return any(
        (isinstance(value, list) and len(value) > LONG_LIST)
        or (depth > 1 and isinstance(value, dict) and _holds_long_list(value, depth - 1))
        for value in document.values()
    )


def _pieces(value: object) -> Iterator[str]:
    """The compact JSON text of ``value``, in pieces: a long list's items one by one."""
    if isinstance(value, dict):
        yield "{"
        for n, (key, item) in enumerate(value.items()):
            yield f"{',' if n else ''}{compact(key)}:"
            yield from _pieces(item)
        yield "}"
    elif isinstance(value, list) and len(value) > LONG_LIST:
        yield "["
        for n, item in enumerate(value):
            yield f"{',' if n else ''}{compact(item)}"
        yield "]"
    else:
        yield compact(value)


def json_headers(request: IRequest, status: int) -> None:
    """Set the status and the headers of a JSON answer on ``request``."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", JSON_TYPE)
    request.setHeader(b"cache-control", b"no-store")


def respond_json(request: IRequest, status: int, document: object) -> bytes:
    """Set status and content type of ``request``; the encoded ``document`` to write."""
    json_headers(request, status)
    return json_bytes(document)


def respond_error(request: IRequest, error: ApiError) -> bytes:
    """Set the error's status on ``request``; the ``{"error": ...}`` body to write."""
    return respond_json(
        request, error.status, {"error": {"code": error.code, "message": error.message}}
    )


def read_json_object(request: IRequest, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object; ApiError 400, 413 or 415 otherwise."""
    content_type = request.getHeader(b"content-type")
    if content_type is not None and not is_json_type(content_type):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the request body must be JSON (Content-Type: application/json), not "
            f"{content_type.decode('latin-1')!r}",
        )
    limit = body_limit(request.path)
    raw = request.content.read(limit + 1) if request.content is not None else b""
    if len(raw) > limit:
        raise body_too_large(limit)
    if not raw.strip() and allow_empty:
        return {}
    if too_deep(raw, MAX_JSON_DEPTH):
        raise bad_request(
            f"request body is nested more than {MAX_JSON_DEPTH} levels deep", "invalid_json"
        )
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"request body is not valid JSON: {e}", "invalid_json") from None
    if not isinstance(document, dict):
        raise bad_request(
            f"request body must be a JSON object, not {type(document).__name__}", "invalid_json"
        )
    return document


def is_json_type(content_type: bytes) -> bool:
    """Whether a body of this Content-Type is read as JSON: ``application/json``,
    ``...+json``, and the defaults of ``curl -d``, urllib and ``fetch`` (form-urlencoded,
    text/plain), which careless clients send with JSON bodies."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return media in _READ_AS_JSON or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


def too_deep(raw: bytes, limit: int) -> bool:
    """Whether JSON text ``raw`` nests arrays and objects more than ``limit`` deep.

    Linear, and without recursion: it runs before the (recursive) parser sees the text. Text
    with no more opening brackets than ``limit`` is not read token by token: a POST of
    100,000 refs has two, and the scan held the reactor for 100 ms (docs/performance.md).
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    in_string = False
    for token in _JSON_TOKEN.finditer(raw):
        char = token.group()
        if char == b'"':
            in_string = not in_string
        elif in_string or len(char) == 2:
            continue
        elif char in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def only_fields(body: dict[str, Any], allowed: set[str]) -> None:
    """Refuse fields this endpoint does not know, so a typo is not silently ignored."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise bad_request(
            f"unknown field(s) {', '.join(map(repr, unknown))}; expected "
            f"{', '.join(sorted(allowed))}"
        )


def boolean(body: dict[str, Any], name: str) -> bool:
    """Field ``name`` of a JSON body, false when absent; ApiError 400 if not a boolean."""
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise bad_request(f"{name!r} must be true or false, not {json.dumps(value)}")
    return value


def query(request: IRequest, name: str) -> str | None:
    """The last value of query parameter ``name``, or None when absent or empty."""
    values = request.args.get(name.encode("ascii"))
    if not values:
        return None
    try:
        value = values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request(f"query parameter {name!r} is not valid UTF-8") from None
    return value or None


def query_bool(request: IRequest, name: str) -> bool:
    """Query parameter ``name`` as ``true`` or ``false`` (false when absent)."""
    text = query(request, name)
    if text is None or text.lower() in ("false", "0", "no"):
        return False
    if text.lower() in ("true", "1", "yes"):
        return True
    raise bad_request(f"{name!r} must be true or false, not {text[:40]!r}")


def query_int(
    request: IRequest, name: str, default: _Default, minimum: int, maximum: int = MAX_INT
) -> int | _Default:
    """Query parameter ``name`` as a whole number within bounds, else ``default``."""
    text = query(request, name)
    return default if text is None else whole_number(text, repr(name), minimum, maximum)


def whole_number(text: str, what: str, minimum: int, maximum: int = MAX_INT) -> int:
    """``text`` as a whole number within bounds; ApiError 400 naming ``what`` otherwise."""
    shown = text if len(text) <= 40 else text[:40] + "..."
    try:
        value = int(text)
    except ValueError:
        raise bad_request(f"{what} must be a whole number, not {shown!r}") from None
    if not minimum <= value <= maximum:
        raise bad_request(f"{what} must be between {minimum} and {maximum}, not {shown}")
    return value


def path_segment(raw: str, what: str) -> str:
    """One percent-encoded path segment, decoded (``%2F`` becomes ``/``)."""
    try:
        value = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise bad_request(f"{what} in the path is not valid UTF-8 once decoded") from None
    if not value:
        raise bad_request(f"{what} in the path is empty")
    return value
