"""The SSE parser: frames complete whatever way the bytes are cut."""

from __future__ import annotations

from databuild.cli.sse import Frame, SSEParser

STREAM = (
    b": keepalive\n\n"
    b"id: 1\nevent: build_request\ndata: {\"idx\": 1}\n\n"
    b"id: 2\r\nevent: job\r\ndata: {\"idx\": 2}\r\n\r\n"
    b"event: build_finished\rdata: {\"status\": \"BUILD_REQUEST_COMPLETED\"}\r\r"
)
EXPECTED = [
    Frame("1", "build_request", '{"idx": 1}'),
    Frame("2", "job", '{"idx": 2}'),
    Frame("2", "build_finished", '{"status": "BUILD_REQUEST_COMPLETED"}'),
]


def test_frames_of_a_whole_stream_with_every_line_ending() -> None:
    assert SSEParser().feed(STREAM) == EXPECTED


def test_frames_are_the_same_however_the_bytes_are_cut() -> None:
    for size in (1, 2, 3, 7, 16):
        parser = SSEParser()
        frames = []
        for start in range(0, len(STREAM), size):
            frames.extend(parser.feed(STREAM[start : start + size]))
        assert frames == EXPECTED, size


def test_comments_and_frames_without_data_dispatch_nothing() -> None:
    parser = SSEParser()
    assert parser.feed(b": keepalive\n\n: another\n\nevent: job\n\n") == []
    assert parser.feed(b"data: x\n\n") == [Frame(None, "message", "x")]


def test_data_lines_join_with_newlines_and_one_space_is_dropped() -> None:
    frames = SSEParser().feed(b"data:a\ndata:  b\n\n")
    assert frames == [Frame(None, "message", "a\n b")]


def test_an_unfinished_frame_waits_for_its_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"id: 9\nevent: job\ndata: {}\n") == []
    assert parser.feed(b"\n") == [Frame("9", "job", "{}")]


def test_multibyte_characters_split_across_chunks_survive() -> None:
    parser = SSEParser()
    data = "data: é\n\n".encode()
    assert parser.feed(data[:7]) == []
    assert parser.feed(data[7:]) == [Frame(None, "message", "é")]
