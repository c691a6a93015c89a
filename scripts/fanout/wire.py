"""Messages between the invoker and an execution environment's process: length-prefixed JSON.

JSON, not pickle: Lambda hands a handler JSON and serialises its response as JSON, so a
response that does not survive ``json.dumps`` fails here as it would there. Standard library
only (the environment's process imports this before the worker).
"""

from __future__ import annotations

import json
import os
import selectors
import struct
import time
from typing import IO, Any, Final

__all__ = ["Receiver", "encode", "read_message"]

_HEADER: Final = struct.Struct(">I")
_CHUNK: Final = 1 << 16


def encode(message: dict[str, Any]) -> bytes:
    """One frame; ``TypeError``/``ValueError`` when ``message`` is not JSON-able."""
    payload = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    return _HEADER.pack(len(payload)) + payload


def _exactly(stream: IO[bytes], size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_message(stream: IO[bytes]) -> dict[str, Any] | None:
    """The next frame, blocking; None when the other side closed the pipe."""
    header = _exactly(stream, _HEADER.size)
    if header is None:
        return None
    payload = _exactly(stream, _HEADER.unpack(header)[0])
    if payload is None:
        return None
    message: dict[str, Any] = json.loads(payload)
    return message


class Receiver:
    """Reads frames from a pipe, giving up at a deadline (a message must be whole by then)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()
        self._selector = selectors.DefaultSelector()  # epoll: no FD_SETSIZE limit, unlike select
        self._selector.register(fd, selectors.EVENT_READ)

    def receive(self, deadline: float) -> dict[str, Any] | None:
        """The next message; None at end of file; ``TimeoutError`` once ``time.monotonic()``
        passes ``deadline``."""
        while (message := self._take()) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._selector.select(remaining):
                raise TimeoutError
            chunk = os.read(self._fd, _CHUNK)
            if not chunk:
                return None
            self._buffer += chunk
        return message

    def _take(self) -> dict[str, Any] | None:
        if len(self._buffer) < _HEADER.size:
            return None
        end = _HEADER.size + _HEADER.unpack_from(self._buffer)[0]
        if len(self._buffer) < end:
            return None
        message: dict[str, Any] = json.loads(self._buffer[_HEADER.size : end])
        del self._buffer[:end]
        return message

    def close(self) -> None:
        self._selector.close()
