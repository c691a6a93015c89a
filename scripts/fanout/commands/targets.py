"""``fanout targets``: what a selection (OUs, account tags, exclusions, regions) expands to."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import boto3
import click
from botocore.exceptions import BotoCoreError, ClientError

from fanout import console
from fanout.errors import EXIT_FAILED, EXIT_OK, CliError, aws_error
from fanout.options import output_option, region_option, resolve_region
from fanout.publish import parse_tags, split_list
from handler import api


@click.command(
    "targets",
    epilog="""\b
examples:
  fanout targets --ous ou-ab12-prod1234 --include-child-ous
  fanout targets --account-tag env=prod --regions us-east-1,eu-west-1 -o json
  fanout targets --file body.json      # a body with "select", as fanout publish sends it""",
)
@click.option("--ous", metavar="OU_IDS", help="the accounts of these OUs (r-...: all)")
@click.option("--include-child-ous", is_flag=True, help="with --ous: their child OUs too")
@click.option(
    "--account-tag",
    "account_tags",
    multiple=True,
    metavar="KEY=VALUE",
    help="accounts with this Organizations tag (repeatable: all must match)",
)
@click.option("--exclude-accounts", metavar="IDS", help="leave these accounts out")
@click.option("--regions", metavar="REGIONS", help="comma-separated (default: the region)")
@click.option("--file", metavar="PATH", help="a body with a select block ('-' reads stdin)")
@region_option()
@output_option(("table", "json"))
def command(
    *,
    ous: str | None,
    include_child_ous: bool,
    account_tags: tuple[str, ...],
    exclude_accounts: str | None,
    regions: str | None,
    file: str | None,
    region: str | None,
    output: str,
) -> int:
    """Expand a selection through AWS Organizations with the worker's own code, and show every
    target it names, whether the worker would enter its account (ALLOWED_ACCOUNT_IDS), and
    what it left out (excluded, suspended, without the tags). Reads Organizations only."""
    resolved = resolve_region(region)
    organizations = boto3.client("organizations", region_name=resolved)
    directory = api.Directory(lambda: organizations)
    try:
        if file is not None:
            planned = _planned_from_file(file, directory, resolved)
        else:
            raw: dict[str, Any] = {
                "organizational_units": split_list(ous),
                "include_child_ous": include_child_ous,
                "account_tags": parse_tags(account_tags),
                "exclude_accounts": split_list(exclude_accounts),
                "regions": split_list(regions),
            }
            selection = api.Selection.of(
                {k: v for k, v in raw.items() if v}, default_region=resolved
            )
            planned = api.plan_selection(selection, directory)
    except api.PermanentError as exc:
        raise CliError(exc.reason) from None
    except (BotoCoreError, ClientError) as exc:
        raise CliError(f"cannot read the organisation: {aws_error(exc)}", EXIT_FAILED) from None
    _print(planned, output)
    return EXIT_OK


def _planned_from_file(file: str, directory: api.Directory, region: str) -> api.Planned:
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text("utf-8")
    except OSError as exc:
        raise CliError(str(exc)) from None
    envelope = api.parse_message(text, message_id="targets-preview", default_region=region)
    if envelope.selection is None:
        raise CliError(f"{file} has no select block: its targets are the ones it lists")
    return api.plan_targets(envelope, directory)


def _print(planned: api.Planned, output: str) -> None:
    try:
        settings: api.OperatorSettings | None = api.operator_settings()
    except api.ConfigurationError:
        settings = None

    def allowed(account: str) -> str:
        if settings is None:
            return "unknown"
        return "no" if settings.refuses(account) else "yes"

    rows: list[dict[str, Any]] = [
        {"account": a, "region": r, "allowed": allowed(a), "params": dict(p)}
        for a, r, p in planned.targets
    ]
    selected = planned.selected
    if output == "json":
        console.print_json(
            {
                "targets": rows,
                "excluded": list(selected.excluded),
                "inactive": dict(selected.inactive),
                "untagged": selected.untagged,
            }
        )
        return
    table = console.table("account", "region", "allowed", "params")
    for row in rows:
        params = json.dumps(row["params"], separators=(",", ":")) if row["params"] else ""
        table.add_row(*console.cells([row["account"], row["region"], row["allowed"], params]))
    console.render(table)
    console.note(planned.describe())
