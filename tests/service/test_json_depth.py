"""The depth check a JSON body passes before it is parsed (``responses.too_deep``)."""

from __future__ import annotations

import json

from databuild.service.responses import MAX_JSON_DEPTH, too_deep


def nested(depth: int) -> bytes:
    return b'{"partitions": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def test_the_limit_is_exact_whether_or_not_the_text_is_scanned() -> None:
    assert not too_deep(nested(MAX_JSON_DEPTH), MAX_JSON_DEPTH)
    assert too_deep(nested(MAX_JSON_DEPTH + 1), MAX_JSON_DEPTH)
    # Shallow, with more brackets than the limit: read token by token, still shallow.
    siblings = json.dumps([{"a": [1]} for _ in range(3 * MAX_JSON_DEPTH)]).encode()
    assert not too_deep(siblings, MAX_JSON_DEPTH)
    assert too_deep(b"[" + siblings[:-1] + b"," + nested(MAX_JSON_DEPTH) + b"]", MAX_JSON_DEPTH)


def test_brackets_inside_strings_do_not_count() -> None:
    refs = ["[" * 100 + '\\"{' * 100, "x]]]"]
    body = json.dumps({"partitions": refs}).encode()
    assert not too_deep(body, MAX_JSON_DEPTH)
    assert not too_deep(json.dumps({"partitions": [f"ref/{n}" for n in range(100_000)]})
                        .encode(), MAX_JSON_DEPTH)
