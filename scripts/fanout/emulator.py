"""An embedded AWS: moto in server mode on 127.0.0.1 and a seeded organisation.

A server rather than ``mock_aws``: the worker, the poller and the publisher reach it over HTTP
through ``AWS_ENDPOINT_URL``, exactly as they reach AWS, so the local path runs the same boto3
code, credential chain and STS calls as production. Credentials returned by ``AssumeRole`` into
``arn:aws:iam::<account>:role/...`` act as that account, so each target account has its own
distributions, instances and SSM commands.

moto keeps its state in module globals: every emulator started in one process shares it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING, Final

import boto3
from moto.server import ThreadedMotoServer

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

__all__ = [
    "DEFAULT_TARGET_ACCOUNTS",
    "FAKE_CREDENTIALS",
    "OPS_ACCOUNT",
    "TARGET_ROLE_NAME",
    "Emulator",
    "Organisation",
    "Queues",
    "TargetAccount",
    "assumed_role_sessions",
    "create_ledger_table",
    "create_queues",
    "seed_organisation",
    "start_emulator",
]

# moto's account for plain (non-assumed) credentials: the ops account that owns the queues.
OPS_ACCOUNT: Final = "123456789012"
DEFAULT_TARGET_ACCOUNTS: Final = ("111111111111", "222222222222", "333333333333")
TARGET_ROLE_NAME: Final = "OpsFanoutTargetRole"
QUEUE_NAME: Final = "fanout-work"
DLQ_NAME: Final = "fanout-dlq"
LEDGER_TABLE: Final = "fanout-ledger"
FAKE_CREDENTIALS: Final = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# Role sessions the emulator opens itself; the worker's own sessions are named after requests.
SEED_SESSION_NAME: Final = "emulator-seed"
# Amazon Linux 2 images are among moto's default AMIs in every region.
_AMI_NAME_FILTER: Final = "amzn2-ami-hvm-*-x86_64-gp2"


class Emulator:
    """A running moto server; ``stop()`` it, or use it as a context manager."""

    def __init__(self, server: ThreadedMotoServer, endpoint_url: str) -> None:
        self._server = server
        self.endpoint_url = endpoint_url

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_emulator(host: str = "127.0.0.1", port: int = 0) -> Emulator:
    """Start moto on ``host``; port 0 picks a free one (see ``endpoint_url``)."""
    # werkzeug logs every request at INFO: silence it so the CLI output stays readable.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    bound_host, bound_port = server.get_host_and_port()
    return Emulator(server, f"http://{bound_host}:{bound_port}")


def fake_session(region: str) -> boto3.Session:
    """A session with fake static credentials: moto maps them to the ops account."""
    return boto3.Session(
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=FAKE_CREDENTIALS["AWS_SESSION_TOKEN"],
        region_name=region,
    )


def assume_session(
    endpoint_url: str,
    account: str,
    *,
    region: str,
    role_name: str = TARGET_ROLE_NAME,
    session_name: str = SEED_SESSION_NAME,
) -> boto3.Session:
    """A session acting as ``account``, through AssumeRole from the ops account."""
    sts = fake_session(region).client("sts", endpoint_url=endpoint_url)
    credentials = sts.assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/{role_name}", RoleSessionName=session_name
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=region,
    )


def assumed_role_sessions(account: str) -> list[str]:
    """Session names of every AssumeRole into ``account`` the in-process emulator has served.

    Reads moto's state directly (the server runs in this process): it counts what the "AWS" side
    saw, whatever client made the calls. Empty when moto's internals differ from 5.x.
    """
    try:
        from moto.sts.models import sts_backends  # noqa: PLC0415 - moto internals, on demand

        roles = sts_backends[account]["aws"].assumed_roles
        return [str(role.session_name) for role in roles]
    except (ImportError, KeyError, AttributeError):
        return []


@dataclass(frozen=True, slots=True)
class Queues:
    """The work queue and its dead-letter queue, in the ops account."""

    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str


@dataclass(frozen=True, slots=True)
class TargetAccount:
    """A seeded target account and the resources tasks can act on."""

    account: str
    distribution_ids: tuple[str, ...]
    instance_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Organisation:
    """What :func:`seed_organisation` created, and how the worker must be configured for it."""

    endpoint_url: str
    region: str
    ops_account: str
    role_name: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str
    targets: tuple[TargetAccount, ...] = field(default=())
    ledger_table: str | None = None

    @property
    def account_ids(self) -> tuple[str, ...]:
        return tuple(target.account for target in self.targets)

    def target(self, account: str) -> TargetAccount:
        for target in self.targets:
            if target.account == account:
                return target
        raise KeyError(account)

    def with_queues(self, queues: Queues) -> Organisation:
        """The same organisation working from other queues (e.g. one pair per test)."""
        return replace(
            self,
            queue_url=queues.queue_url,
            queue_arn=queues.queue_arn,
            dlq_url=queues.dlq_url,
            dlq_arn=queues.dlq_arn,
        )

    def ops_session(self) -> boto3.Session:
        return fake_session(self.region)

    def target_session(
        self, account: str, *, session_name: str = SEED_SESSION_NAME
    ) -> boto3.Session:
        return assume_session(
            self.endpoint_url,
            account,
            region=self.region,
            role_name=self.role_name,
            session_name=session_name,
        )

    def handler_environment(self, *, log_level: str = "INFO") -> dict[str, str]:
        """The environment the worker (``handler.app``) needs to run against this emulator."""
        ledger = {"LEDGER_TABLE": self.ledger_table} if self.ledger_table else {}
        return {
            **ledger,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            **FAKE_CREDENTIALS,
            "AWS_EC2_METADATA_DISABLED": "true",
            "TARGET_ROLE_NAME": self.role_name,
            "TARGET_ROLE_PATH": "/",
            "ALLOWED_ACCOUNT_IDS": ",".join(self.account_ids),
            "ALLOW_ANY_ACCOUNT": "false",
            "DEAD_LETTER_QUEUE_URL": self.dlq_url,
            # Where the worker re-sends targets to retry later, with a delay.
            "WORK_QUEUE_URL": self.queue_url,
            "POWERTOOLS_SERVICE_NAME": "fanout",
            "POWERTOOLS_METRICS_NAMESPACE": "Fanout",
            # No CloudWatch agent and no X-Ray daemon locally: keep stdout for logs.
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "LOG_LEVEL": log_level,
        }


def create_queues(
    endpoint_url: str,
    *,
    region: str = "us-east-1",
    name: str = QUEUE_NAME,
    dlq_name: str = DLQ_NAME,
    visibility_timeout: int = 5,
    max_receive_count: int = 3,
) -> Queues:
    """Create (or reuse) a work queue whose redrive policy sends to its own DLQ.

    The visibility timeout is short so that local redelivery takes seconds, not minutes.
    """
    sqs: SQSClient = fake_session(region).client("sqs", endpoint_url=endpoint_url)
    dlq_url = sqs.create_queue(QueueName=dlq_name)["QueueUrl"]
    dlq_arn = _queue_arn(sqs, dlq_url)
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
    queue_url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    return Queues(queue_url, _queue_arn(sqs, queue_url), dlq_url, dlq_arn)


def create_ledger_table(endpoint_url: str, *, region: str, name: str = LEDGER_TABLE) -> str:
    """The worker's job ledger, keyed as in template.yaml (pk, sk; TTL on expires_at)."""
    dynamodb = fake_session(region).client("dynamodb", endpoint_url=endpoint_url)
    with contextlib.suppress(dynamodb.exceptions.ResourceInUseException):
        dynamodb.create_table(
            TableName=name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
        )
        dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"AttributeName": "expires_at", "Enabled": True},
        )
    return name


def _queue_arn(sqs: SQSClient, queue_url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    return attributes["Attributes"]["QueueArn"]


def seed_organisation(
    endpoint_url: str,
    target_accounts: tuple[str, ...] = DEFAULT_TARGET_ACCOUNTS,
    region: str = "us-east-1",
    *,
    role_name: str = TARGET_ROLE_NAME,
    visibility_timeout: int = 5,
    max_receive_count: int = 3,
    distributions_per_account: int = 2,
    instances_per_account: int = 2,
    ledger_table: str | None = LEDGER_TABLE,
) -> Organisation:
    """Create the ops account's queues and ledger table and, in each target account, the role,
    distributions and hosts tasks act on. ``ledger_table=None``: the worker's in-memory ledger."""
    queues = create_queues(
        endpoint_url,
        region=region,
        visibility_timeout=visibility_timeout,
        max_receive_count=max_receive_count,
    )
    if ledger_table:
        create_ledger_table(endpoint_url, region=region, name=ledger_table)
    image_id: str | None = None
    targets = []
    for account in target_accounts:
        session = assume_session(endpoint_url, account, region=region, role_name=role_name)
        _create_target_role(session, endpoint_url, role_name)
        if image_id is None:
            image_id = _find_image(session, endpoint_url)
        targets.append(
            TargetAccount(
                account=account,
                distribution_ids=_create_distributions(
                    session, endpoint_url, account, distributions_per_account
                ),
                instance_ids=_run_instances(session, endpoint_url, image_id, instances_per_account),
            )
        )
    return Organisation(
        endpoint_url=endpoint_url,
        region=region,
        ops_account=OPS_ACCOUNT,
        role_name=role_name,
        queue_url=queues.queue_url,
        queue_arn=queues.queue_arn,
        dlq_url=queues.dlq_url,
        dlq_arn=queues.dlq_arn,
        targets=tuple(targets),
        ledger_table=ledger_table,
    )


def _create_target_role(session: boto3.Session, endpoint_url: str, role_name: str) -> None:
    """The role the worker assumes, trusting the ops account (moto does not enforce trust)."""
    iam = session.client("iam", endpoint_url=endpoint_url)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{OPS_ACCOUNT}:root"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    # Seeded before in this process (moto's state is shared): the role is already there.
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))


def _find_image(session: boto3.Session, endpoint_url: str) -> str:
    ec2 = session.client("ec2", endpoint_url=endpoint_url)
    images = ec2.describe_images(
        Owners=["amazon"], Filters=[{"Name": "name", "Values": [_AMI_NAME_FILTER]}]
    )["Images"]
    if not images:
        raise RuntimeError(f"the emulator offers no image named {_AMI_NAME_FILTER}")
    return images[0]["ImageId"]


def _create_distributions(
    session: boto3.Session, endpoint_url: str, account: str, count: int
) -> tuple[str, ...]:
    cloudfront = session.client("cloudfront", endpoint_url=endpoint_url)
    ids = []
    # CloudFront refuses a CallerReference it has seen; seeding twice in one process must work.
    run = uuid.uuid4().hex[:8]
    for n in range(count):
        origin = f"assets-{account}-{n}.s3.amazonaws.com"
        distribution = cloudfront.create_distribution(
            DistributionConfig={
                "CallerReference": f"emulator-seed-{account}-{run}-{n}",
                "Comment": f"seeded site {n} of {account}",
                "Enabled": True,
                "Origins": {
                    "Quantity": 1,
                    "Items": [
                        {
                            "Id": "assets",
                            "DomainName": origin,
                            "S3OriginConfig": {"OriginAccessIdentity": ""},
                        }
                    ],
                },
                "DefaultCacheBehavior": {
                    "TargetOriginId": "assets",
                    "ViewerProtocolPolicy": "redirect-to-https",
                    # AWS managed policy "CachingOptimized".
                    "CachePolicyId": "658327ea-f89d-4fab-a63d-7e88639e58f6",
                },
            }
        )["Distribution"]
        ids.append(distribution["Id"])
    return tuple(ids)


def _run_instances(
    session: boto3.Session, endpoint_url: str, image_id: str, count: int
) -> tuple[str, ...]:
    ec2 = session.client("ec2", endpoint_url=endpoint_url)
    reservation = ec2.run_instances(
        ImageId=image_id,
        InstanceType="t3.micro",
        MinCount=count,
        MaxCount=count,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Role", "Value": "web"}]}],
    )
    return tuple(instance["InstanceId"] for instance in reservation["Instances"])
