"""``fanout tasks``, ``fanout policy`` and the conventions every verb shares (help, errors,
colours). These read the plugin registry only; no emulator is needed."""

from __future__ import annotations

import io
import json
import sys
from importlib.metadata import version
from typing import Any

import pytest
import yaml

from fanout import console
from fanout.cli import main
from handler.policy import session_policy, target_role_statements
from tasks.registry import all_tasks, get_task, task_names

pytestmark = pytest.mark.integration

VERBS = ("demo", "emulator", "publish", "poll", "status", "redrive", "tasks", "policy")


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


class _CloudFormationLoader(yaml.SafeLoader):
    """Reads ``!Sub "..."`` as the plain string, as target_role_statements writes it."""


_CloudFormationLoader.add_constructor(
    "!Sub",
    lambda loader, node: loader.construct_scalar(node),  # type: ignore[arg-type]
)


def test_tasks_json_lists_every_registered_plugin_with_its_actions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GIVEN the plugin registry
    WHEN ``fanout tasks --output json`` runs
    THEN it lists every registered task, each with its declared IAM actions, rate and a
    parameter entry for every property of its schema."""
    listed = run_json(capsys, "tasks", "--output", "json")

    assert [t["name"] for t in listed] == list(task_names())
    for entry in listed:
        task = get_task(entry["name"])
        assert entry["iam_actions"] == list(task.iam_actions)
        assert entry["rate"]["per_second"] == task.rate.per_second
        assert {p["name"] for p in entry["params"]} == set(task.params_schema["properties"])
        required = {p["name"] for p in entry["params"] if p["required"]}
        assert required == set(task.params_schema.get("required", ()))


def test_tasks_markdown_has_a_parameter_table_per_plugin(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GIVEN the plugin registry
    WHEN ``fanout tasks --output markdown`` runs
    THEN there is a section per task with a row for each of its parameters."""
    assert main(["tasks", "--output", "markdown"]) == 0
    text = capsys.readouterr().out

    for task in all_tasks():
        section = text.split(f"#### `{task.name}`\n", 1)[1].split("\n#### ", 1)[0]
        assert "| parameter | type | required | description and constraints |" in section
        for name in task.params_schema["properties"]:
            assert f"\n| `{name}` |" in section


def test_tasks_with_a_name_shows_that_task_alone(capsys: pytest.CaptureFixture[str]) -> None:
    """GIVEN ``fanout tasks cloudfront.invalidate`` (table and json)
    WHEN it runs
    THEN it exits 0 and shows that task with each of its parameters, and no other task."""
    assert main(["tasks", "cloudfront.invalidate"]) == 0
    table = capsys.readouterr().out
    listed = run_json(capsys, "tasks", "cloudfront.invalidate", "--output", "json")

    assert [entry["name"] for entry in listed] == ["cloudfront.invalidate"]
    assert table.startswith("cloudfront.invalidate\n")
    for name in get_task("cloudfront.invalidate").params_schema["properties"]:
        assert f"\n{name} " in table
    assert not [
        other for other in task_names() if other != "cloudfront.invalidate" and other in table
    ]


def test_tasks_with_an_unknown_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """GIVEN a task name no plugin registers WHEN ``fanout tasks NAME`` runs THEN exit 2 with
    one line listing the known tasks."""
    code = main(["tasks", "cloudfront.purge"])

    out, err = capsys.readouterr()
    assert (code, out, len(err.splitlines())) == (2, "", 1)
    assert "known tasks: cloudfront.invalidate" in err


def test_the_tasks_table_fits_a_100_column_terminal_without_cutting_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a 100-column terminal (COLUMNS=100)
    WHEN ``fanout tasks`` runs
    THEN no line is longer than 100 characters, nothing is cut with an ellipsis, and every
    task name and IAM action appears whole."""
    monkeypatch.setenv("COLUMNS", "100")

    assert main(["tasks"]) == 0
    out = capsys.readouterr().out

    assert max(len(line) for line in out.splitlines()) <= 100
    assert "…" not in out
    for task in all_tasks():
        assert task.name in out
        assert all(action in out for action in task.iam_actions)


def test_policy_prints_the_target_role_statements(capsys: pytest.CaptureFixture[str]) -> None:
    """GIVEN the plugin registry
    WHEN ``fanout policy`` runs
    THEN its JSON policy document's statements equal target_role_statements(all_tasks())."""
    document = run_json(capsys, "policy")

    assert document["Version"] == "2012-10-17"
    assert document["Statement"] == target_role_statements(all_tasks())


def test_policy_yaml_is_the_cloudformation_shape_with_sub_strings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GIVEN the plugin registry
    WHEN ``fanout policy --output yaml`` runs
    THEN it parses as a CloudFormation policy (PolicyName, PolicyDocument) whose statements are
    target_role_statements, with every ${...} ARN written as a !Sub string."""
    assert main(["policy", "--output", "yaml"]) == 0
    text = capsys.readouterr().out

    policy = yaml.load(text, Loader=_CloudFormationLoader)  # noqa: S506 - a SafeLoader subclass
    assert policy["PolicyName"] == "fanout-tasks"
    assert policy["PolicyDocument"]["Statement"] == target_role_statements(all_tasks())
    resource_lines = [line for line in text.splitlines() if "${AWS::" in line]
    assert resource_lines
    assert all("!Sub " in line for line in resource_lines)


def test_policy_session_is_the_session_policy_the_worker_passes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GIVEN a task and an account in us-east-1
    WHEN ``fanout policy --session TASK --account ID --region us-east-1`` runs
    THEN it prints handler.policy.session_policy for that task and account."""
    for name in task_names():
        printed = run_json(
            capsys,
            "policy",
            "--session",
            name,
            "--account",
            "111111111111",
            "--region",
            "us-east-1",
        )

        assert printed == json.loads(session_policy(get_task(name), "aws", "111111111111"))


def test_policy_session_without_an_account_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GIVEN --session without --account
    WHEN ``fanout policy`` runs
    THEN the exit code is 2 with a one-line ``fanout: error:``."""
    code = main(["policy", "--session", "cloudfront.invalidate"])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("fanout: error:")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help_with_an_example(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    """GIVEN a verb
    WHEN ``fanout VERB --help`` runs
    THEN it exits 0 and the help ends with examples of the verb in use."""
    code = main([verb, "--help"])

    out = capsys.readouterr().out
    assert code == 0
    assert "example" in out
    assert f"fanout {verb}" in out.split("example", 1)[1]


def test_top_level_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """GIVEN the ``fanout`` command
    WHEN ``fanout --help`` runs
    THEN it documents exit codes 0, 1 and 2 and lists every verb."""
    assert main(["--help"]) == 0
    out = capsys.readouterr().out

    assert "exit codes" in out
    for line in ("  0  done", "  1  some targets failed", "  2  usage or validation error"):
        assert line in out
    assert all(verb in out for verb in VERBS)


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    """GIVEN ``fanout --version`` WHEN it runs THEN exit 0 and stdout names the version."""
    code = main(["--version"])

    assert (code, capsys.readouterr().out) == (0, f"fanout, version {version('fanout')}\n")


def test_an_unknown_verb_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """GIVEN ``fanout purge`` WHEN it runs THEN exit 2 with one ``fanout: error:`` line."""
    code = main(["purge"])

    err = capsys.readouterr().err
    assert (code, len(err.splitlines())) == (2, 1)
    assert err.startswith("fanout: error: no such command 'purge'")


def test_a_usage_error_is_one_line_on_stderr_with_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GIVEN an option value argparse refuses
    WHEN the command runs
    THEN stderr is one line starting ``fanout: error:``, stdout is empty, exit code 2."""
    code = main(["tasks", "--output", "xml"])

    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.startswith("fanout: error:")
    assert len(err.splitlines()) == 1


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colours_only_on_a_terminal_and_never_with_no_color(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN stderr on a terminal, on a pipe, and on a terminal with NO_COLOR set
    WHEN a command fails
    THEN only the terminal without NO_COLOR gets a coloured (red) ``error:``."""
    monkeypatch.setenv("TERM", "xterm-256color")
    main(["tasks", "no.such"])
    on_pipe = capsys.readouterr().err
    terminal = _Terminal()
    with monkeypatch.context() as patched:
        patched.setattr(sys, "stderr", terminal)
        main(["tasks", "no.such"])
        monkeypatch.setenv("NO_COLOR", "1")
        with_no_color = _Terminal()
        patched.setattr(sys, "stderr", with_no_color)
        main(["tasks", "no.such"])

    red = "\x1b[1;31m"
    assert (red in terminal.getvalue(), red in on_pipe, red in with_no_color.getvalue()) == (
        True,
        False,
        False,
    )
    assert "\x1b[" not in on_pipe


def test_the_progress_bar_draws_only_on_a_terminal() -> None:
    """GIVEN a progress bar on a terminal and one on a pipe
    WHEN both are updated
    THEN only the terminal received a bar, and closing erases it."""
    terminal, pipe = _Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        bar = console.Progress("publish", stream=stream)
        bar.update(30, 60)
        bar.close()

    assert "30/60" in terminal.getvalue()
    assert terminal.getvalue().endswith("\x1b[2K")
    assert pipe.getvalue() == ""
