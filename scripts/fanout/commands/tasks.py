"""``fanout tasks``: the task plugins, their parameters, IAM actions and rate."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Group, RenderableType
from rich.table import Column
from rich.text import Text

from fanout import console
from fanout.catalog import (
    describe_params,
    first_sentence,
    markdown,
    param_details,
    permissions_text,
    rate_text,
    replace_readme_section,
    task_dict,
)
from fanout.errors import EXIT_OK, CliError
from fanout.options import output_option
from handler import api


@click.command(
    "tasks",
    epilog="""\b
examples:
  fanout tasks
  fanout tasks cloudfront.invalidate        # one task: every parameter, explained
  fanout tasks --output json | jq '.[].name'
  fanout tasks --update-readme docs/messages.md   # regenerate the docs' plugin section""",
)
@click.argument("task", required=False, metavar="[TASK]")
@output_option(("table", "json", "markdown"))
@click.option(
    "--update-readme",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="rewrite the section between the tasks markers of this file",
)
def command(*, task: str | None, output: str, update_readme: Path | None) -> int:
    """Every registered plugin (or TASK alone) with its parameters (from its JSON Schema:
    name, type, required, description and constraints), the IAM actions its target role needs
    and the rate it keeps. --output markdown is the README's plugin section."""
    if update_readme is not None:
        if task is not None:
            raise CliError("--update-readme rewrites the section of every task: give no TASK")
        _update_readme(update_readme)
        return EXIT_OK
    if task is None:
        tasks = api.all_tasks()
    else:
        try:
            tasks = [api.get_task(task)]
        except api.PermanentError as exc:
            raise CliError(exc.reason) from None
    if output == "json":
        console.print_json([task_dict(t) for t in tasks])
    elif output == "markdown":
        sys.stdout.write(markdown(tasks))
    elif task is None:
        console.render(_summary_table(tasks))
    else:
        console.render(_one_task(tasks[0]))
    return EXIT_OK


def _update_readme(path: Path) -> None:
    try:
        text = path.read_text("utf-8")
        path.write_text(replace_readme_section(text, markdown(api.all_tasks())), "utf-8")
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(f"updated the plugin section of {path}")


def _summary_table(tasks: list[api.Task]) -> RenderableType:
    """One row per task; prose wraps to the terminal's width and nothing is cut."""
    table = console.table(
        Column("task", overflow="fold"),
        Column("parameters (* required)", overflow="fold"),
        Column("IAM actions", no_wrap=True),
        Column("rate", overflow="fold"),
    )
    for task in tasks:
        name = Text(task.name, style="bold")
        name.append("\n" + first_sentence(task.description), style="")
        scope = "per account (all regions)" if task.rate.global_api else "per account and region"
        table.add_row(
            name,
            ", ".join(p.name + ("*" if p.required else "") for p in describe_params(task)),
            "\n".join(task.iam_actions),
            f"{task.rate.per_second:g}/s, burst {task.rate.burst},\n{scope}",
        )
    return Group(
        table,
        Text(""),
        Text("fanout tasks TASK explains each parameter of TASK"),
        Text(REQUEST_OPTIONS),
    )


# What every task's request takes besides its parameters (``fanout publish --help`` says more).
REQUEST_OPTIONS = (
    "every task also takes, in `fanout publish`: targets by organisation (--ous, "
    "--include-child-ous, --account-tag, --exclude-accounts, --regions, --params-by-account; "
    "`fanout targets` shows what they expand to), rollout control (--max-concurrency, --ramp, "
    "--region-order, --canary, --max-errors) and stop conditions (--alarms, "
    "--on-alarm-unreadable); see docs/targeting.md"
)


def _one_task(task: api.Task) -> RenderableType:
    """The description, a parameter table, then permissions, rate and idempotence."""
    params = console.table(
        Column("parameter", no_wrap=True),
        Column("type", overflow="fold"),
        Column("required", no_wrap=True),
        Column("description and constraints", overflow="fold"),
    )
    for param in describe_params(task):
        required = "yes" if param.required else "no"
        params.add_row(param.name, param.type, required, param_details(param) or "-")
    idempotent = "yes" if task.idempotent else "no (not repeated after a timeout)"
    return Group(
        Text(task.name, style="bold"),
        Text(task.description),
        Text(""),
        params,
        Text(""),
        Text(f"IAM actions: {permissions_text(task)}"),
        Text(f"rate: {rate_text(task.rate)}, on {task.rate.api}"),
        Text(f"idempotent: {idempotent}"),
    )
