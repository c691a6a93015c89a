"""``fanout env --stack NAME``: the CLI's variables from a deployed stack (moto's CloudFormation).

The stack here is a stand-in with template.yaml's output and parameter names (moto cannot run
the SAM transform); ``test_the_names_read_are_template_yaml_s`` keeps those names honest.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import cfn_yaml

from fanout.cli import main
from fanout.stack_env import OUTPUT_VARIABLES, PARAMETER_VARIABLES

ROOT = Path(__file__).resolve().parents[2]

STAND_IN = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Parameters": {
        "AllowedAccountIds": {"Type": "String", "Default": ""},
        "TargetRolePath": {"Type": "String", "Default": "/"},
    },
    "Resources": {
        "DeadLetterQueue": {"Type": "AWS::SQS::Queue"},
        "WorkQueue": {"Type": "AWS::SQS::Queue"},
        "LedgerTable": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            },
        },
    },
    "Outputs": {
        "WorkQueueUrl": {"Value": {"Ref": "WorkQueue"}},
        "DeadLetterQueueUrl": {"Value": {"Ref": "DeadLetterQueue"}},
        "LedgerTableName": {"Value": {"Ref": "LedgerTable"}},
    },
}


def _deploy(name: str, template: dict[str, Any], **parameters: str) -> None:
    boto3.client("cloudformation").create_stack(
        StackName=name,
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )


def _exports(text: str) -> dict[str, str]:
    """What a shell would set from ``eval "$(fanout env ...)"``."""
    script = text + '\nenv -0 | grep -z -E "^(FANOUT_|LEDGER_|ALLOWED_|TARGET_|AWS_REGION=)"'
    done = subprocess.run(
        ["/bin/bash", "-c", script], capture_output=True, check=True, env={"PATH": "/usr/bin:/bin"}
    )
    pairs = [item.decode().split("=", 1) for item in done.stdout.split(b"\0") if item]
    return dict(pairs)


@pytest.mark.usefixtures("aws")
def test_the_export_lines_set_every_variable_the_cli_reads(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GIVEN a deployed fanout stack with an allow-list and a role path
    WHEN ``fanout env --stack`` runs and a shell evaluates its output
    THEN the shell has the work queue and DLQ URLs, the ledger table, the region, the
    allow-list, the role path and the status role's name, exactly as the stack says."""
    _deploy(
        "fanout-prod",
        STAND_IN,
        AllowedAccountIds="111111111111,222222222222",
        TargetRolePath="/fanout/",
    )
    sqs = boto3.client("sqs")

    code = main(["env", "--stack", "fanout-prod", "--region", "us-east-1"])
    out, err = capsys.readouterr()
    exports = _exports(out)

    assert code == 0, err
    assert sorted(exports) == sorted(
        [
            "AWS_REGION",
            *OUTPUT_VARIABLES.values(),
            *PARAMETER_VARIABLES.values(),
            "FANOUT_STATUS_ROLE_NAME",
        ]
    )
    assert (
        exports["FANOUT_QUEUE_URL"]
        == sqs.get_queue_url(QueueName=exports["FANOUT_QUEUE_URL"].rsplit("/", 1)[1])["QueueUrl"]
    )
    assert exports["FANOUT_QUEUE_URL"] != exports["FANOUT_DLQ_URL"]
    assert boto3.client("dynamodb").describe_table(TableName=exports["LEDGER_TABLE"])
    assert exports["ALLOWED_ACCOUNT_IDS"] == "111111111111,222222222222"
    assert exports["TARGET_ROLE_PATH"] == "/fanout/"
    assert exports["AWS_REGION"] == "us-east-1"
    assert exports["FANOUT_STATUS_ROLE_NAME"] == "OpsFanoutStatusRole"


@pytest.mark.usefixtures("aws")
def test_json_output_is_the_same_variables(capsys: pytest.CaptureFixture[str]) -> None:
    """GIVEN a deployed stack WHEN ``fanout env --stack ... -o json`` runs
    THEN stdout is one JSON object of the same variables."""
    _deploy("fanout-dev", STAND_IN)

    code = main(["env", "--stack", "fanout-dev", "-o", "json", "--status-role", "Reader"])
    document = json.loads(capsys.readouterr().out)

    assert code == 0
    assert document["FANOUT_STATUS_ROLE_NAME"] == "Reader"
    assert set(OUTPUT_VARIABLES.values()) <= set(document)


@pytest.mark.usefixtures("aws")
def test_an_unknown_stack_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """GIVEN no such stack WHEN ``fanout env --stack`` runs THEN exit 2 and one error line."""
    code = main(["env", "--stack", "no-such-stack"])

    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err.strip() == "fanout: error: no stack 'no-such-stack' in us-east-1"


@pytest.mark.usefixtures("aws")
def test_a_stack_without_the_outputs_is_not_a_fanout_stack(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GIVEN a stack without fanout's outputs WHEN ``fanout env`` reads it
    THEN exit 2, naming the missing outputs."""
    _deploy("other", {**STAND_IN, "Outputs": {}})

    code = main(["env", "--stack", "other"])

    err = capsys.readouterr().err
    assert code == 2
    assert "has no output WorkQueueUrl, DeadLetterQueueUrl, LedgerTableName" in err


def test_the_names_read_are_template_yaml_s() -> None:
    """GIVEN template.yaml WHEN its outputs and parameters are listed
    THEN every name ``fanout env`` reads is there (a rename cannot break it silently)."""
    template = cfn_yaml.load(str(ROOT / "template.yaml"))

    assert set(OUTPUT_VARIABLES) <= set(template["Outputs"])
    assert set(PARAMETER_VARIABLES) <= set(template["Parameters"])
    assert not any("Condition" in template["Outputs"][name] for name in OUTPUT_VARIABLES)
