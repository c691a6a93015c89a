"""``fanout env --stack NAME``: export lines for the CLI, from a deployed stack."""

from __future__ import annotations

import os
import shlex

import boto3
import click
from botocore.exceptions import BotoCoreError, ClientError

from fanout import console
from fanout.errors import EXIT_FAILED, EXIT_OK, CliError, aws_error
from fanout.options import output_option, region_option, resolve_region
from fanout.stack_env import StackNotFoundError, stack_environment

DEFAULT_STATUS_ROLE = "OpsFanoutStatusRole"  # target-role.yaml's StatusRoleName default


@click.command(
    "env",
    epilog="""\b
examples:
  eval "$(fanout env --stack fanout-prod --region eu-west-1)"
  fanout env --stack fanout-dev -o json""",
)
@click.option("--stack", "stack_name", required=True, metavar="NAME", help="the worker's stack")
@region_option("the stack's region (default: $AWS_REGION)")
@click.option(
    "--status-role",
    default=DEFAULT_STATUS_ROLE,
    show_default=True,
    metavar="NAME",
    help="target-role.yaml's StatusRoleName, for `status --refresh`",
)
@output_option(("shell", "json"))
def command(*, stack_name: str, region: str | None, status_role: str, output: str) -> int:
    """Print `export` lines for the variables the other verbs read (FANOUT_QUEUE_URL,
    FANOUT_DLQ_URL, LEDGER_TABLE, AWS_REGION, ALLOWED_ACCOUNT_IDS, TARGET_ROLE_PATH,
    FANOUT_STATUS_ROLE_NAME), from the stack's outputs and parameters (CloudFormation
    DescribeStacks: needs cloudformation:DescribeStacks on the stack)."""
    resolved_region = resolve_region(region)
    cloudformation = boto3.client("cloudformation", region_name=resolved_region)
    try:
        environment = stack_environment(
            cloudformation, stack_name, region=resolved_region, status_role=status_role
        )
    except StackNotFoundError as exc:
        raise CliError(exc.reason) from None
    except (BotoCoreError, ClientError) as exc:
        raise CliError(f"cannot read stack {stack_name!r}: {aws_error(exc)}", EXIT_FAILED) from exc
    if os.environ.get("AWS_ENDPOINT_URL"):
        console.note(
            "AWS_ENDPOINT_URL is set (an emulator?): the stack was read there, and the other "
            "verbs will call it too until you unset it"
        )
    if output == "json":
        console.print_json(environment)
    else:
        for name, value in environment.items():
            print(f"export {name}={shlex.quote(value)}")
    return EXIT_OK
