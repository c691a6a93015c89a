"""The optional status role of target-role.yaml grants what ``fanout status --refresh`` calls.

Like ``test_policy.py``'s check of the target role: the template cannot drift from the plugins'
declared ``status_actions`` (``handler.api.status_role_actions``) nor from ``fanout policy
--status``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from fanout.cli import main
from handler.api import status_role_actions
from tasks import all_tasks

ROOT = Path(__file__).resolve().parents[2]


def _status_statements() -> list[dict[str, Any]]:
    template = cfn_yaml.load(str(ROOT / "target-role.yaml"))
    [policy] = template["Resources"]["StatusRole"]["Properties"]["Policies"]
    return [dict(s) for s in policy["PolicyDocument"]["Statement"]]


def test_the_status_role_grants_exactly_the_plugins_status_actions() -> None:
    """GIVEN target-role.yaml's status role and the plugins' status actions
    WHEN its statements' actions are collected THEN they are exactly those actions, allowed."""
    statements = _status_statements()

    actions = sorted(a for s in statements for a in s["Action"])

    assert actions == status_role_actions(all_tasks())
    assert {s["Effect"] for s in statements} == {"Allow"}


def test_the_template_is_what_fanout_policy_status_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GIVEN ``fanout policy --status`` WHEN its statement is compared with the template's
    THEN they are identical (paste one into the other)."""
    assert main(["policy", "--status"]) == 0

    printed = json.loads(capsys.readouterr().out)["Statement"]

    assert printed == _status_statements()


def test_status_actions_are_read_only() -> None:
    """GIVEN every plugin's status actions WHEN their verbs are read
    THEN each is a Get, List or Describe (the role is for reading state, never acting)."""
    verbs = {a.split(":", 1)[1] for a in status_role_actions(all_tasks())}

    assert verbs
    assert all(v.startswith(("Get", "List", "Describe")) for v in verbs), verbs
