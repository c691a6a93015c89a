"""Suite-wide hooks: the integration tier's captured output is scanned for credentials; the
CLI's terminal detection sees a plain pipe, whatever the developer's or CI's shell exports."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.secret_scan import SCAN


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if "tests/integration/" in item.nodeid and report.when == "call":
        for name, content in report.sections:
            SCAN.add(f"{item.nodeid} [{name}]", content)
    return report


@pytest.fixture(autouse=True)
def _plain_pipe_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """No forced colours or widths: the CLI's output is what a pipe gets."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
