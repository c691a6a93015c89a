"""Terminal output of the operator CLI, drawn by rich: tables, colours, progress, one-line errors.

Results go to stdout, diagnostics (errors, notes, progress) to stderr. rich decides colours the
way well-behaved CLIs do: only on a terminal, never with ``NO_COLOR`` (https://no-color.org) or
``TERM=dumb``. Off a terminal, tables are as wide as their content (``COLUMNS`` caps them) so a
pipe or a file gets whole lines; ``--output json`` never comes here (see :func:`print_json`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any, Final, TextIO

from rich import box
from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TaskID, TextColumn
from rich.progress import Progress as RichProgress
from rich.table import Column, Table
from rich.text import Text

__all__ = [
    "Cell",
    "LiveLine",
    "Progress",
    "cells",
    "error",
    "make_console",
    "note",
    "one_line",
    "print_json",
    "render",
    "table",
]

# Off a terminal without COLUMNS: no wrapping (a row stays one line for grep and friends).
UNBOUNDED_WIDTH: Final = 100_000
# A cell: plain text, or (text, rich style) painted only where colours are used.
Cell = str | tuple[str, str]


def make_console(file: TextIO | None = None, *, stderr: bool = False) -> Console:
    """A console on ``file`` (default: the current stdout, or stderr) for one piece of output.

    Built per use: rich decides terminal, colours and width when a console is created, and the
    streams may have changed since (tests, redirections).
    """
    console = Console(
        file=file, stderr=stderr, highlight=False, markup=False, emoji=False, soft_wrap=False
    )
    if not console.is_terminal:
        columns = os.environ.get("COLUMNS", "")
        console.width = int(columns) if columns.isdigit() else UNBOUNDED_WIDTH
    return console


def one_line(text: str | None) -> str:
    """Whitespace, newlines included, collapsed to single spaces."""
    return " ".join((text or "").split())


def table(*columns: str | Column) -> Table:
    """A borderless table with a rule under the header, columns two spaces apart."""
    return Table(
        *columns,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        header_style="bold",
        padding=(0, 1),
    )


def cells(row: Sequence[Cell]) -> list[Text]:
    return [Text(c) if isinstance(c, str) else Text(c[0], style=c[1]) for c in row]


def render(renderable: RenderableType, *, file: TextIO | None = None) -> None:
    """Print to stdout (or ``file``) without trailing blanks on the lines."""
    console = make_console(file)
    with console.capture() as captured:
        console.print(renderable)
    lines = captured.get().splitlines()
    (file or sys.stdout).write("".join(line.rstrip() + "\n" for line in lines))


def print_json(document: Any) -> None:
    """Machine-readable output: JSON only, on stdout, never decorated or wrapped."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def _diagnostic(kind: str, style: str, message: str, stream: TextIO | None) -> None:
    console = make_console(stream, stderr=stream is None)
    line = Text.assemble(("fanout: ", ""), (f"{kind}:", style), " ", one_line(message))
    console.print(line, soft_wrap=True)


def error(message: str, *, stream: TextIO | None = None) -> None:
    """``fanout: error: <message>`` as a single line on stderr."""
    _diagnostic("error", "bold red", message, stream)


def note(message: str, *, stream: TextIO | None = None) -> None:
    """``fanout: note: <message>`` on stderr: worth knowing, not a failure."""
    _diagnostic("note", "yellow", message, stream)


class Progress:
    """A progress bar on stderr, drawn only when stderr is a terminal; erased when closed.

    Off a terminal (pipes, CI logs, tests) it draws nothing, so output stays parseable.
    """

    def __init__(
        self, label: str, *, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        console = make_console(stream, stderr=stream is None)
        self.enabled = console.is_terminal if enabled is None else enabled
        self._bar = RichProgress(
            TextColumn(label),
            BarColumn(bar_width=40, complete_style="green"),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            console=console,
            transient=True,
            auto_refresh=False,
            disable=not self.enabled,
        )
        self._task: TaskID | None = None

    def update(self, done: int, total: int, note: str = "") -> None:
        if not self.enabled:
            return
        if self._task is None:
            self._bar.start()
            self._task = self._bar.add_task(note, total=total, completed=done)
        else:
            self._bar.update(self._task, completed=done, total=total, description=note)
        self._bar.refresh()

    def close(self) -> None:
        """Erase the bar so the next output starts on a clean line."""
        if self._task is not None:
            self._bar.stop()
            self._task = None


class LiveLine:
    """One line of progress on stderr, redrawn in place on a terminal and erased when closed.

    For work without a known total (``fanout poll``: the queue grows as the worker defers).
    Off a terminal it draws nothing, like :class:`Progress`; it is redrawn only on
    :meth:`update`, so what it shows never depends on timing.
    """

    def __init__(
        self, label: str, *, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        console = make_console(stream, stderr=stream is None)
        self.enabled = console.is_terminal if enabled is None else enabled
        self._line = RichProgress(
            SpinnerColumn(),
            TextColumn(label),
            TextColumn("{task.description}", markup=False),
            console=console,
            transient=True,
            auto_refresh=False,
            disable=not self.enabled,
        )
        self._task: TaskID | None = None

    def update(self, text: str) -> None:
        if not self.enabled:
            return
        if self._task is None:
            self._line.start()
            self._task = self._line.add_task(text, total=None)
        else:
            self._line.update(self._task, description=text)
        self._line.refresh()

    def close(self) -> None:
        if self._task is not None:
            self._line.stop()
            self._task = None
