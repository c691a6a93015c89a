"""Terminal output for the operator CLI: tables, colours, a progress bar, one-line errors.

Conventions of well-loved CLIs: colour and progress bars only on a terminal and never when
``NO_COLOR`` is set (https://no-color.org); machine-readable output (``--output json``) is
never decorated; errors are one line on stderr, ``fanout: error: ...``.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final, TextIO

__all__ = [
    "Cell",
    "Progress",
    "error",
    "one_line",
    "paint",
    "render_table",
    "use_color",
]

_COLOURS: Final[Mapping[str, str]] = {
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "dim": "2",
    "bold": "1",
}
# A cell: plain text, or (text, colour name) when it may be painted on a terminal.
Cell = str | tuple[str, str]


def use_color(stream: TextIO) -> bool:
    """Colour only on a terminal, never with NO_COLOR (any non-empty value) or TERM=dumb."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty: Callable[[], bool] | None = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def paint(text: str, colour: str, *, enabled: bool) -> str:
    code = _COLOURS.get(colour)
    if not enabled or code is None or not text:
        return text
    return f"\x1b[{code}m{text}\x1b[0m"


def one_line(text: str | None, limit: int | None = None) -> str:
    """Whitespace (newlines included) collapsed; cut to ``limit`` characters with an ellipsis."""
    flat = " ".join((text or "").split())
    if limit is not None and len(flat) > limit:
        return flat[: max(0, limit - 1)] + "…"
    return flat


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[Cell]], *, colour: bool = False
) -> str:
    """Columns padded to their widest cell, a rule under the header; colours after padding."""
    plain = [[c if isinstance(c, str) else c[0] for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for texts in plain:
        for i, text in enumerate(texts):
            widths[i] = max(widths[i], len(text))
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    for row in rows:
        cells = []
        for cell, width in zip(row, widths, strict=True):
            text, hue = (cell, "") if isinstance(cell, str) else cell
            cells.append(paint(text, hue, enabled=colour) + " " * (width - len(text)))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def error(message: str, *, stream: TextIO | None = None) -> None:
    """``fanout: error: <message>`` as a single line on stderr."""
    print(f"fanout: error: {one_line(message)}", file=stream or sys.stderr)


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal.

    Off a terminal (pipes, CI logs, tests) it draws nothing, so output stays parseable.
    """

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        min_interval: float = 0.1,
    ) -> None:
        self._stream = stream or sys.stderr
        isatty: Callable[[], bool] | None = getattr(self._stream, "isatty", None)
        self.enabled = bool(isatty and isatty()) if enabled is None else enabled
        self._colour = use_color(self._stream)
        self._label = label
        self._min_interval = min_interval
        self._last = 0.0
        self._drawn = False

    def update(self, done: int, total: int, note: str = "", *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and self._drawn and now - self._last < self._min_interval:
            return
        self._last = now
        columns = shutil.get_terminal_size((80, 20)).columns
        counts = f" {done}/{total}"
        tail = f"  {note}" if note else ""
        width = max(10, min(40, columns - len(self._label) - len(counts) - len(tail) - 4))
        filled = 0 if total <= 0 else min(width, round(width * done / total))
        bar = paint("█" * filled, "green", enabled=self._colour) + "░" * (width - filled)
        line = f"{self._label} {bar}{counts}{tail}"
        self._stream.write("\r\x1b[2K" + line)
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the bar so the next output starts on a clean line."""
        if self.enabled and self._drawn:
            self._stream.write("\r\x1b[2K")
            self._stream.flush()
            self._drawn = False
