"""An incremental parser of Server-Sent Events (the progress stream of SPEC §5.6)."""

from __future__ import annotations

from attrs import define, field, frozen


@frozen
class Frame:
    """One dispatched event: its ``id`` (None if the frame had none), type and data."""

    id: str | None
    event: str
    data: str


@define
class SSEParser:
    """Feed bytes as they arrive; get back the frames they complete.

    Follows the WHATWG event-stream rules: lines end with LF, CRLF or CR; a blank line
    dispatches; ``:`` starts a comment (keepalives); one space after the colon is dropped;
    several ``data`` lines join with LF; a frame with no data is not dispatched.
    """

    _buffer: bytes = b""
    _event: str = ""
    _data: list[str] = field(factory=list)
    _id: str | None = None
    _pending_cr: bool = False

    def feed(self, chunk: bytes) -> list[Frame]:
        """Take the next bytes of the stream; returns the frames they complete."""
        if self._pending_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._pending_cr = False
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            # A CR ending the buffer ends a line; an LF opening the next chunk is its CRLF's.
            self._pending_cr = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        complete, newline, self._buffer = buffer.rpartition(b"\n")
        if not newline:
            return []
        frames: list[Frame] = []
        # Lines are cut at LF before decoding: a UTF-8 sequence never holds that byte.
        for line in complete.decode("utf-8", errors="replace").split("\n"):
            frame = self._line(line)
            if frame is not None:
                frames.append(frame)
        return frames

    def _line(self, line: str) -> Frame | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> Frame | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return Frame(id=self._id, event=event or "message", data="\n".join(data))
