"""The README's generated parts stay in step with the code that generates them."""

from __future__ import annotations

from pathlib import Path

import pytest

from fanout.catalog import readme_section
from fanout.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_plugin_section_is_what_fanout_tasks_generates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GIVEN README.md's text between the tasks:start and tasks:end markers
    WHEN ``fanout tasks --output markdown`` runs
    THEN its output is exactly that text (else: ``fanout tasks --update-readme README.md``)."""
    assert main(["tasks", "--output", "markdown"]) == 0
    generated = capsys.readouterr().out

    in_readme = readme_section(README.read_text("utf-8"))

    assert in_readme == generated, (
        "README.md's plugin section is stale: run `fanout tasks --update-readme README.md`"
    )
