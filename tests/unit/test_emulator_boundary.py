"""Nothing in the repository starts a moto server except ``fanout.emulator.start_emulator``.

Plain moto server is not faithful where the worker depends on it (docs/emulator.md): a test or
benchmark that started one of its own would pass on an emulator that lies.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EMULATOR = ROOT / "scripts" / "fanout" / "emulator"
# Every way to serve moto over HTTP: its threaded server, its CLI module, its WSGI app.
STARTS_MOTO = re.compile(
    r"ThreadedMotoServer|moto\.server|moto\.moto_server|DomainDispatcherApplication|\bmoto_server\b"
)


def test_only_the_emulator_package_starts_a_moto_server() -> None:
    """GIVEN every Python file of the project (src, scripts, tests)
    WHEN searched for the ways to serve moto
    THEN only fanout/emulator/ uses them (everyone else calls start_emulator)."""
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("src", "scripts", "tests")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if EMULATOR not in path.parents
        and path != Path(__file__).resolve()
        and STARTS_MOTO.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
