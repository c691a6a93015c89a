"""``fanout policy``: the target role's statements, the status role's, or the session policy of
one task."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from fanout import console
from fanout.catalog import to_yaml
from fanout.errors import EXIT_OK, CliError
from fanout.options import output_option, region_option, resolve_region
from handler import api


def _print_status_policy(output: str) -> int:
    status = {"Version": "2012-10-17", "Statement": [status_role_statement()]}
    if output == "yaml":
        sys.stdout.write(to_yaml({"PolicyName": "fanout-status", "PolicyDocument": status}))
    else:
        console.print_json(status)
    return EXIT_OK


def status_role_statement() -> dict[str, Any]:
    """The status role's one statement: every plugin's status action, on this account's
    resources (``*``: read-only, and ssm:ListCommands has no resource-level permissions)."""
    return {
        "Sid": "ReadTaskStatus",
        "Effect": "Allow",
        "Action": api.status_role_actions(api.all_tasks()),
        "Resource": "*",
    }


@click.command(
    "policy",
    epilog="""\b
examples:
  fanout policy
  fanout policy --output yaml      # paste under Policies: in target-role.yaml
  fanout policy --session cloudfront.invalidate --account 111111111111
  fanout policy --status --output yaml   # the read-only status role of target-role.yaml""",
)
@output_option(("json", "yaml"))
@click.option("--session", metavar="TASK", help="print the session policy for TASK")
@click.option("--account", metavar="ID", help="target account of --session")
@region_option("region of --session (default: $AWS_REGION)")
@click.option(
    "--status",
    "status_role",
    is_flag=True,
    help="the read-only status role's statement (what `fanout status --refresh` calls)",
)
def command(
    *,
    output: str,
    session: str | None,
    account: str | None,
    region: str | None,
    status_role: bool,
) -> int:
    """The target role's statements, derived from the plugins' declarations (what
    target-role.yaml grants): JSON, or YAML in the CloudFormation shape of target-role.yaml
    (!Sub strings). With --session, the session policy the worker passes on AssumeRole for that
    task and account. With --status, the statement of target-role.yaml's optional status role:
    the read-only actions `fanout status --refresh` calls in a target account."""
    if status_role:
        if session or account or region:
            raise CliError("--status goes alone (no --session, --account or --region)")
        return _print_status_policy(output)
    if (session is None) != (account is None):
        raise CliError("--session and --account go together")
    if session is None or account is None:
        if region:
            raise CliError("--region needs --session")
        document: dict[str, Any] = {
            "Version": "2012-10-17",
            "Statement": api.target_role_statements(api.all_tasks()),
        }
        if output == "yaml":
            shaped = {"PolicyName": "fanout-tasks", "PolicyDocument": document}
            sys.stdout.write(to_yaml(shaped, sub=True))
        else:
            console.print_json(document)
        return EXIT_OK
    if not api.ACCOUNT_ID_RE.match(account):
        raise CliError(f"--account must be 12 digits, got {account!r}")
    try:
        task = api.get_task(session)
    except api.PermanentError as exc:
        raise CliError(exc.reason) from None
    partition = api.partition_of(resolve_region(region))
    policy = json.loads(api.session_policy(task, partition, account))
    if output == "yaml":
        sys.stdout.write(to_yaml(policy))
    else:
        console.print_json(policy)
    return EXIT_OK
