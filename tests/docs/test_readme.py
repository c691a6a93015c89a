"""The docs' generated parts stay in step with the code that generates them, the README's links
resolve, and the mkdocs site builds offline with no broken link."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cfnlint.decode import cfn_yaml

from fanout.catalog import readme_section
from fanout.cli import main
from tests.docs import parameters

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MESSAGES = ROOT / "docs" / "messages.md"


def test_the_plugin_section_is_what_fanout_tasks_generates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GIVEN docs/messages.md's text between the tasks:start and tasks:end markers
    WHEN ``fanout tasks --output markdown`` runs
    THEN its output is exactly that text
    (else: ``fanout tasks --update-readme docs/messages.md``)."""
    assert main(["tasks", "--output", "markdown"]) == 0
    generated = capsys.readouterr().out

    in_docs = readme_section(MESSAGES.read_text("utf-8"))

    assert in_docs == generated, (
        "docs/messages.md's plugin section is stale: "
        "run `fanout tasks --update-readme docs/messages.md`"
    )


def test_the_parameter_table_is_template_yaml_s() -> None:
    """GIVEN docs/deploy.md's parameter table WHEN generated again from template.yaml
    THEN it is the same (else: ``python -m tests.docs.parameters``)."""
    template = dict(cfn_yaml.load(str(ROOT / "template.yaml")))

    in_docs = parameters.section(parameters.DEPLOY.read_text("utf-8"))

    assert in_docs == parameters.table(template), "run `python -m tests.docs.parameters`"


def test_every_link_of_the_readme_to_a_file_resolves() -> None:
    """GIVEN README.md WHEN its relative links are followed THEN each names a file."""
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README.read_text("utf-8"))

    assert links
    assert [link for link in links if not (ROOT / link).exists()] == []


def test_every_docs_page_is_in_the_site_navigation() -> None:
    """GIVEN docs/*.md WHEN mkdocs.yml's nav is read THEN it lists each page (none orphaned)."""
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)  # noqa: S506 - !!python tags stay strings

    def pages(node: object) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, list):
            return [p for item in node for p in pages(item)]
        if isinstance(node, dict):
            return [p for value in node.values() for p in pages(value)]
        return []

    assert sorted(pages(config["nav"])) == sorted(p.name for p in (ROOT / "docs").glob("*.md"))


@pytest.mark.timeout(180)
def test_the_site_builds_offline_with_no_broken_link(tmp_path: Path) -> None:
    """GIVEN mkdocs.yml and docs/ WHEN ``mkdocs build --strict`` runs (what ``make docs`` does)
    THEN it succeeds: every link between pages and to an anchor resolves."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=150,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "index.html").is_file()
