"""JSON bodies of the API: documents, errors ``{"error": {"code", "message"}}`` and input checks."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from twisted.web.iweb import IRequest

MAX_BODY_BYTES = 1024 * 1024
JSON_TYPE = b"application/json; charset=utf-8"


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


def body_too_large() -> ApiError:
    """The 413 error for a body over MAX_BODY_BYTES."""
    return ApiError(
        413, "body_too_large", f"request body is over {MAX_BODY_BYTES} bytes (1 MiB), the limit"
    )


def json_bytes(document: object) -> bytes:
    """``document`` as compact UTF-8 JSON."""
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


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
    """The request body as a JSON object; ApiError 400 or 413 otherwise."""
    raw = request.content.read(MAX_BODY_BYTES + 1) if request.content is not None else b""
    if len(raw) > MAX_BODY_BYTES:
        raise body_too_large()
    if not raw.strip() and allow_empty:
        return {}
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"request body is not valid JSON: {e}", "invalid_json") from None
    if not isinstance(document, dict):
        raise bad_request(
            f"request body must be a JSON object, not {type(document).__name__}", "invalid_json"
        )
    return document


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


def query_int(request: IRequest, name: str, default: int, minimum: int, maximum: int) -> int:
    """Query parameter ``name`` as a whole number within bounds, else ``default``."""
    text = query(request, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise bad_request(f"{name!r} must be a whole number, not {text!r}") from None
    if not minimum <= value <= maximum:
        raise bad_request(f"{name!r} must be between {minimum} and {maximum}, not {value}")
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
