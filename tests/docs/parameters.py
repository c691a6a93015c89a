"""The parameter table of docs/deploy.md, generated from template.yaml's Descriptions.

``python -m tests.docs.parameters`` rewrites the table between its markers; a docs test fails
when it is stale (sam deploy --guided shows no descriptions: this table is where they are read).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "docs" / "deploy.md"
START = "<!-- parameters:start (generated from template.yaml: python -m tests.docs.parameters) -->"
END = "<!-- parameters:end -->"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table(template: dict[str, Any]) -> str:
    rows = ["| parameter | default | what it means |", "|---|---|---|"]
    groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    for group in groups:
        for name in group["Parameters"]:
            spec = template["Parameters"][name]
            default = str(spec.get("Default", ""))
            shown = f"`{default}`" if default else "(empty)"
            rows.append(f"| `{name}` | {_cell(shown)} | {_cell(str(spec['Description']))} |")
    return "\n".join(rows) + "\n"


def section(text: str) -> str:
    match = re.search(re.escape(START) + r"\n(.*?)" + re.escape(END), text, re.S)
    if match is None:
        raise ValueError(f"{DEPLOY} has no parameter table markers")
    return match.group(1)


def main() -> None:
    template = dict(cfn_yaml.load(str(ROOT / "template.yaml")))
    text = DEPLOY.read_text(encoding="utf-8")
    DEPLOY.write_text(text.replace(section(text), table(template)), encoding="utf-8")


if __name__ == "__main__":
    main()
