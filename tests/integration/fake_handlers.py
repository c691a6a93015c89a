"""Fake ``lambda_handler``s for the local poller's tests, importable in an environment's process.

Each invocation appends one JSON line to ``<directory>/invocations.jsonl`` (its pid, bodies,
receive counts, remaining time, the note of the init hook ``prepare``), so a test can tell
which process ran what. What a record does is its body:

- ``ok``: nothing;
- ``raise``: the handler raises (a function error);
- ``print``: the handler prints ``PRINTED`` on stdout, as Powertools logs do;
- ``hang``: the handler writes ``started-<pid>``, waits until ``<directory>/release`` exists,
  then writes ``continued-<pid>``: a file that proves its code went on after the wait.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "DIRECTORY_ENV",
    "NOTE_ENV",
    "PRINTED",
    "from_environment",
    "hang_in_first_init",
    "invocations",
    "prepare",
    "recorder",
]

Handler = Callable[[dict[str, Any], Any], Any]

DIRECTORY_ENV = "FAKE_HANDLER_DIRECTORY"
NOTE_ENV = "FAKE_HANDLER_NOTE"
PRINTED = "printed-by-the-handler"
HANG_LIMIT_S = 120.0  # a hung handler that nobody kills ends on its own, eventually


def invocations(directory: Path) -> list[dict[str, Any]]:
    path = directory / "invocations.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def recorder(directory: str) -> Handler:
    """The handler factory: a fake handler recording into ``directory``."""
    where = Path(directory)

    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        records = event["Records"]
        with (where / "invocations.jsonl").open("a") as log:
            entry = {
                "pid": os.getpid(),
                "bodies": [r["body"] for r in records],
                "receive_counts": [r["attributes"]["ApproximateReceiveCount"] for r in records],
                "remaining_ms": context.get_remaining_time_in_millis(),
                "note": os.environ.get(NOTE_ENV),
            }
            log.write(json.dumps(entry) + "\n")
        for record in records:
            _act(record["body"], where)
        return {"batchItemFailures": []}

    return handle


def prepare(note: str, fail: bool = False) -> None:
    """An init hook: leaves ``note`` where every invocation of this environment records it."""
    if fail:
        raise RuntimeError("the init hook was told to fail")
    os.environ[NOTE_ENV] = note


def hang_in_first_init(directory: str) -> None:
    """An init hook that hangs in the first environment to run it (``init-<pid>`` names each)."""
    where = Path(directory)
    (where / f"init-{os.getpid()}").touch()
    first = where / "first-init"
    if not first.exists():
        first.touch()
        time.sleep(HANG_LIMIT_S)


def from_environment(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A handler named like Lambda's Handler setting, configured by the environment."""
    result: dict[str, Any] = recorder(os.environ[DIRECTORY_ENV])(event, context)
    return result


def _act(body: str, where: Path) -> None:
    if body == "raise":
        raise RuntimeError("the fake handler was told to fail")
    if body == "print":
        print(PRINTED, flush=True)  # noqa: T201 - what the test looks for on stdout and stderr
    if body == "hang":
        pid = os.getpid()
        (where / f"started-{pid}").touch()
        give_up = time.monotonic() + HANG_LIMIT_S
        while not (where / "release").exists() and time.monotonic() < give_up:
            time.sleep(0.02)
        (where / f"continued-{pid}").touch()
