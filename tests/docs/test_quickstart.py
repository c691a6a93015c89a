"""The README's quickstart, run as a newcomer runs it: its blocks, verbatim, in two shells.

Terminal 1's block runs in the background (``fanout emulator`` until it is stopped); once the
emulator has written its env file, terminal 2's block runs line by line in one bash with
``set -euo pipefail``, so any command that fails fails the test. The emulator's own ``# try:``
lines must be terminal 2's commands, so the README cannot drift from what the emulator says.
Both run in a scratch directory whose ``.venv`` is this checkout's.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
ENV_FILE = ".fanout-emulator.env"
READY_WAIT_S = 120
READY = "# Ctrl-C stops the emulator"


def _read(directory: Path) -> str:
    return (directory / "terminal-1.log").read_text()


def block(marker: str) -> list[str]:
    """The lines of the bash block right after ``<!-- quickstart:<marker> ... -->``."""
    text = README.read_text("utf-8")
    match = re.search(
        rf"<!-- quickstart:{re.escape(marker)}\b[^>]*-->\s*```bash\n(.*?)```", text, re.S
    )
    assert match is not None, f"README.md has no quickstart:{marker} block"
    return [line for line in match.group(1).splitlines() if line.strip()]


def _environment() -> dict[str, str]:
    """A newcomer's shell: no AWS or fanout variables, no virtualenv active."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "FANOUT_", "LEDGER_", "ALLOWED_", "TARGET_", "VIRTUAL_ENV"))
    }


@pytest.mark.timeout(400)
def test_the_quickstart_runs_line_by_line_and_the_last_status_succeeds(tmp_path: Path) -> None:
    """GIVEN the README's quickstart blocks, in a directory with this checkout's .venv
    WHEN terminal 1's block runs, and, once its env file exists, terminal 2's block runs
    THEN every command of terminal 2 exits 0, the emulator's `# try:` lines are exactly those
    commands, and the last `fanout status` reports the redriven request succeeded."""
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    first, second = block("terminal-1"), block("terminal-2")
    log = (tmp_path / "terminal-1.log").open("w")
    emulator = subprocess.Popen(
        ["/bin/bash", "-c", "set -euo pipefail\n" + "\n".join(first)],
        cwd=tmp_path,
        env=_environment(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + READY_WAIT_S
        # Ready: the env file is written and the last line printed (stdout is flushed there).
        while not (tmp_path / ENV_FILE).exists() or READY not in _read(tmp_path):
            assert emulator.poll() is None, _read(tmp_path)
            assert time.monotonic() < deadline, "the emulator did not get ready"
            time.sleep(0.2)
        printed = _read(tmp_path)
        tried = [
            re.sub(r"^#\s*(try:)?\s*", "", line)
            for line in printed.splitlines()
            if re.match(r"^# try:|^#      \S", line)
        ]

        done = subprocess.run(
            ["/bin/bash", "-c", "set -euo pipefail\n" + "\n".join(second)],
            cwd=tmp_path,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        os.killpg(emulator.pid, signal.SIGINT)
        emulator.wait(timeout=30)
        log.close()

    assert done.returncode == 0, done.stdout + done.stderr
    assert tried == [line for line in second if line != "source .venv/bin/activate"]
    assert "request try-purge (succeeded)" in done.stdout
    assert "AccountNotAllowedError" in done.stdout  # the dry run shows the letter's reason
    # The last status: the redriven request succeeded, and its results were exported.
    assert done.stdout.rstrip().splitlines()[-2:] == [
        "request try-new-account (succeeded): 1 target(s): 1 succeeded, 0 failed, 0 pending",
        "results: s3://fanout-results/fanout/results/try-new-account.jsonl",
    ]
    assert not (tmp_path / ENV_FILE).exists(), "the emulator left its env file behind"
