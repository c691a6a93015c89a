"""The seeded organisation: the ops account's queues and ledger, the target accounts' resources.

Seeding goes through the emulator's HTTP endpoint like any client, so it works for an emulator in
another process too (the benchmark host). With ``stable_ids=True`` the resources the sample
events in ``events/`` name are created with those ids (see ``STABLE_IDS`` and ``ids``), so
``sam local``-style events run unchanged against the emulator.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

import boto3
from botocore.exceptions import ClientError

from fanout.emulator.ids import IDS_HEADER
from handler.api import DEFAULT_TARGET_ROLE_NAME

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

__all__ = [
    "DEFAULT_TARGET_ACCOUNTS",
    "FAKE_CREDENTIALS",
    "OPS_ACCOUNT",
    "STABLE_IDS",
    "TARGET_ROLE_NAME",
    "Organisation",
    "Queues",
    "StableResources",
    "TargetAccount",
    "assume_session",
    "assumed_role_sessions",
    "create_ledger_table",
    "create_queues",
    "fake_session",
    "seed_distributions",
    "seed_organisation",
]

# moto's account for plain (non-assumed) credentials: the ops account that owns the queues.
OPS_ACCOUNT: Final = "123456789012"
DEFAULT_TARGET_ACCOUNTS: Final = ("111111111111", "222222222222", "333333333333")
TARGET_ROLE_NAME: Final = DEFAULT_TARGET_ROLE_NAME
QUEUE_NAME: Final = "fanout-work"
DLQ_NAME: Final = "fanout-dlq"
LEDGER_TABLE: Final = "fanout-ledger"
EVENT_BUS: Final = "fanout-events"
RESULTS_BUCKET: Final = "fanout-results"
FAKE_CREDENTIALS: Final = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# Role sessions the emulator opens itself; the worker's own sessions are named after requests.
SEED_SESSION_NAME: Final = "emulator-seed"
# Amazon Linux 2 images are among moto's default AMIs in every region.
_AMI_NAME_FILTER: Final = "amzn2-ami-hvm-*-x86_64-gp2"
# The role seeded Lambda functions run as (moto checks that it exists).
_FUNCTION_ROLE: Final = "fanout-emulator-function"
_SEEDED_IP_SET_ADDRESSES: Final = ("203.0.113.0/24",)


@dataclass(frozen=True, slots=True)
class StableResources:
    """What one account gets, with fixed ids, when seeded with ``stable_ids=True``."""

    distributions: tuple[str, ...] = ()
    # Instances in the seeding region, then (region, id) of instances elsewhere.
    instances: tuple[str, ...] = ()
    regional_instances: tuple[tuple[str, str], ...] = ()
    # (name, id) of CLOUDFRONT-scope WAF IP sets (CloudFront scope lives in us-east-1).
    ip_sets: tuple[tuple[str, str], ...] = ()
    # (region, function name, alias or None).
    functions: tuple[tuple[str, str, str | None], ...] = ()


# The ids the sample events name (events/sqs-*.json and the ASG launch event).
STABLE_IDS: Final[Mapping[str, StableResources]] = {
    "111111111111": StableResources(
        distributions=("E2QWRUHEXAMPLE",),
        instances=("i-0123456789abcdef0",),
        regional_instances=(("eu-west-1", "i-0b188560f0e4a2c1d"),),
        ip_sets=(("blocked-clients", "a1b2c3d4-5678-90ab-cdef-111111111111"),),
        functions=(("us-east-1", "cache-warmer", None),),
    ),
    "222222222222": StableResources(
        distributions=("E1B2C3D4EXAMPLE",),
        ip_sets=(("blocked-clients", "a1b2c3d4-5678-90ab-cdef-222222222222"),),
        functions=(("eu-west-1", "cache-warmer", "live"),),
    ),
    "333333333333": StableResources(instances=("i-0fedcba9876543210",)),
}


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
    # Seeded with stable ids only: instances in other regions ("region/id"), WAF IP sets
    # ("name/id", CLOUDFRONT scope) and Lambda function ARNs (with the alias, if any).
    other_instances: tuple[str, ...] = ()
    ip_sets: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()


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
    # Where the worker announces finished requests, and exports their results.
    event_bus: str | None = None
    results_bucket: str | None = None

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
        announce = {
            name: value
            for name, value in (
                ("EVENT_BUS_NAME", self.event_bus),
                ("RESULTS_BUCKET", self.results_bucket),
            )
            if value
        }
        return {
            **ledger,
            **announce,
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


def create_event_bus(endpoint_url: str, *, region: str, name: str = EVENT_BUS) -> str:
    """The bus the worker puts "Request Finished" events on (reused when it exists)."""
    events = fake_session(region).client("events", endpoint_url=endpoint_url)
    with contextlib.suppress(events.exceptions.ResourceAlreadyExistsException):
        events.create_event_bus(Name=name)
    return name


def capture_events(endpoint_url: str, *, region: str, bus: str, queue_name: str) -> str:
    """A queue receiving every fanout event of ``bus`` (a rule with an SQS target): what a
    consumer of the completion events would see. Returns the queue's URL."""
    session = fake_session(region)
    sqs: SQSClient = session.client("sqs", endpoint_url=endpoint_url)
    events = session.client("events", endpoint_url=endpoint_url)
    url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    rule = f"capture-{queue_name}"[:64]
    events.put_rule(Name=rule, EventBusName=bus, EventPattern=json.dumps({"source": ["fanout"]}))
    events.put_targets(
        Rule=rule, EventBusName=bus, Targets=[{"Id": "capture", "Arn": _queue_arn(sqs, url)}]
    )
    return url


def create_results_bucket(endpoint_url: str, *, region: str, name: str = RESULTS_BUCKET) -> str:
    s3 = fake_session(region).client("s3", endpoint_url=endpoint_url)
    with contextlib.suppress(
        s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists
    ):
        s3.create_bucket(Bucket=name)
    return name


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
    stable_ids: bool = False,
    announce: bool = True,
) -> Organisation:
    """Create the ops account's queues and ledger table and, in each target account, the role,
    distributions and hosts tasks act on. ``ledger_table=None``: the worker's in-memory ledger.

    ``stable_ids``: the resources of :data:`STABLE_IDS` get their fixed ids (the first
    distributions and instances of an account, plus its IP sets, functions and instances in
    other regions); seeding again in the same emulator reuses them.
    """
    queues = create_queues(
        endpoint_url,
        region=region,
        visibility_timeout=visibility_timeout,
        max_receive_count=max_receive_count,
    )
    if ledger_table:
        create_ledger_table(endpoint_url, region=region, name=ledger_table)
    bus = create_event_bus(endpoint_url, region=region) if announce else None
    bucket = create_results_bucket(endpoint_url, region=region) if announce else None
    targets = []
    for account in target_accounts:
        session = assume_session(endpoint_url, account, region=region, role_name=role_name)
        _create_target_role(session, endpoint_url, role_name)
        stable = STABLE_IDS.get(account, StableResources()) if stable_ids else StableResources()
        seeder = _Seeder(endpoint_url, account, session)
        targets.append(
            TargetAccount(
                account=account,
                distribution_ids=seeder.distributions(
                    distributions_per_account, stable.distributions
                ),
                instance_ids=seeder.instances(region, instances_per_account, stable.instances),
                other_instances=tuple(
                    f"{r}/{seeder.instances(r, 1, (i,))[0]}" for r, i in stable.regional_instances
                ),
                ip_sets=tuple(seeder.ip_set(name, ip_set_id) for name, ip_set_id in stable.ip_sets),
                functions=tuple(seeder.function(*spec) for spec in stable.functions),
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
        event_bus=bus,
        results_bucket=bucket,
    )


def seed_distributions(
    endpoint_url: str,
    accounts: tuple[str, ...],
    region: str = "us-east-1",
    *,
    role_name: str = TARGET_ROLE_NAME,
) -> dict[str, str]:
    """The target role and one distribution in each account (e.g. members of the seeded
    organisation that ``seed_organisation`` did not seed); account -> distribution id."""
    found = {}
    for account in accounts:
        session = assume_session(endpoint_url, account, region=region, role_name=role_name)
        _create_target_role(session, endpoint_url, role_name)
        [found[account]] = _Seeder(endpoint_url, account, session).distributions(1, ())
    return found


def _create_target_role(session: boto3.Session, endpoint_url: str, role_name: str) -> None:
    """The role the worker assumes, trusting the ops account (moto does not enforce trust)."""
    _create_role(session, endpoint_url, role_name, {"AWS": f"arn:aws:iam::{OPS_ACCOUNT}:root"})


def _create_role(
    session: boto3.Session, endpoint_url: str, role_name: str, principal: Mapping[str, str]
) -> str:
    iam = session.client("iam", endpoint_url=endpoint_url)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": dict(principal), "Action": "sts:AssumeRole"}
        ],
    }
    # Seeded before in this process (moto's state is shared): the role is already there.
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust))
    return str(iam.get_role(RoleName=role_name)["Role"]["Arn"])


@contextlib.contextmanager
def _asking_for_ids(client: Any, operation: str, ids: tuple[str, ...]) -> Iterator[None]:
    """The next ``operation`` calls of ``client`` ask the emulator for these ids (``ids``)."""
    event = f"before-send.{client.meta.service_model.service_id.hyphenize()}.{operation}"

    def add_header(request: Any, **_: Any) -> None:
        request.headers[IDS_HEADER] = ",".join(ids)

    client.meta.events.register(event, add_header)
    try:
        yield
    finally:
        client.meta.events.unregister(event, add_header)


def _missing(error: ClientError, *codes: str) -> bool:
    return error.response.get("Error", {}).get("Code") in codes


class _Seeder:
    """Creates one target account's resources, reusing those with a fixed id that exist."""

    def __init__(self, endpoint_url: str, account: str, session: boto3.Session) -> None:
        self._endpoint_url = endpoint_url
        self._account = account
        self._session = session
        self._images: dict[str, str] = {}

    def _client(self, service: str, region: str | None = None) -> Any:
        session: Any = self._session  # the service is chosen at run time: untyped on purpose
        return session.client(service, endpoint_url=self._endpoint_url, region_name=region)

    def distributions(self, count: int, fixed: tuple[str, ...]) -> tuple[str, ...]:
        cloudfront = self._client("cloudfront")
        ids = []
        # CloudFront refuses a CallerReference it has seen; seeding twice in one process must work.
        run = uuid.uuid4().hex[:8]
        for n in range(count):
            wanted = fixed[n] if n < len(fixed) else None
            if wanted is not None:
                try:
                    cloudfront.get_distribution(Id=wanted)
                except ClientError as exc:
                    if not _missing(exc, "NoSuchDistribution"):
                        raise
                else:
                    ids.append(wanted)
                    continue
            with _asking_for_ids(cloudfront, "CreateDistribution", (wanted,) if wanted else ()):
                distribution = cloudfront.create_distribution(
                    DistributionConfig=_distribution_config(self._account, n, run)
                )["Distribution"]
            ids.append(distribution["Id"])
        return tuple(ids)

    def _image(self, region: str) -> str:
        if region not in self._images:
            self._images[region] = _find_image(self._client("ec2", region))
        return self._images[region]

    def instances(self, region: str, count: int, fixed: tuple[str, ...]) -> tuple[str, ...]:
        ec2 = self._client("ec2", region)
        wanted = fixed[:count]
        ids: list[str] = []
        for instance_id in wanted:
            try:
                ec2.describe_instances(InstanceIds=[instance_id])
            except ClientError as exc:
                if not _missing(exc, "InvalidInstanceID.NotFound"):
                    raise
                with _asking_for_ids(ec2, "RunInstances", (instance_id,)):
                    ids += _run_instances(ec2, self._image(region), 1)
            else:
                ids.append(instance_id)
        if count > len(wanted):
            ids += _run_instances(ec2, self._image(region), count - len(wanted))
        return tuple(ids)

    def ip_set(self, name: str, ip_set_id: str) -> str:
        # CLOUDFRONT-scope WAF resources live in us-east-1.
        waf = self._client("wafv2", "us-east-1")
        try:
            waf.get_ip_set(Name=name, Scope="CLOUDFRONT", Id=ip_set_id)
        except ClientError as exc:
            if not _missing(exc, "WAFNonexistentItemException"):
                raise
            with _asking_for_ids(waf, "CreateIPSet", (ip_set_id,)):
                waf.create_ip_set(
                    Name=name,
                    Scope="CLOUDFRONT",
                    IPAddressVersion="IPV4",
                    Addresses=list(_SEEDED_IP_SET_ADDRESSES),
                    Description="seeded by the fanout emulator",
                )
        return f"{name}/{ip_set_id}"

    def function(self, region: str, name: str, alias: str | None) -> str:
        """A Python function; without Docker moto cannot run its code (see docs/emulator.md)."""
        lam = self._client("lambda", region)
        try:
            arn = str(lam.get_function(FunctionName=name)["Configuration"]["FunctionArn"])
        except ClientError as exc:
            if not _missing(exc, "ResourceNotFoundException"):
                raise
            role = _create_role(
                self._session,
                self._endpoint_url,
                _FUNCTION_ROLE,
                {"Service": "lambda.amazonaws.com"},
            )
            arn = str(
                lam.create_function(
                    FunctionName=name,
                    Runtime="python3.11",
                    Role=role,
                    Handler="index.handler",
                    Code={"ZipFile": _function_code()},
                    Description="seeded by the fanout emulator",
                )["FunctionArn"]
            )
        if alias is None:
            return arn
        try:
            return str(lam.get_alias(FunctionName=name, Name=alias)["AliasArn"])
        except ClientError as exc:
            if not _missing(exc, "ResourceNotFoundException"):
                raise
        version = lam.publish_version(FunctionName=name)["Version"]
        return str(
            lam.create_alias(FunctionName=name, Name=alias, FunctionVersion=version)["AliasArn"]
        )


def _function_code() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("index.py", "def handler(event, context):\n    return event\n")
    return buffer.getvalue()


def _find_image(ec2: Any) -> str:
    images = ec2.describe_images(
        Owners=["amazon"], Filters=[{"Name": "name", "Values": [_AMI_NAME_FILTER]}]
    )["Images"]
    if not images:
        raise RuntimeError(f"the emulator offers no image named {_AMI_NAME_FILTER}")
    return str(images[0]["ImageId"])


def _distribution_config(account: str, n: int, run: str) -> dict[str, Any]:
    return {
        "CallerReference": f"emulator-seed-{account}-{run}-{n}",
        "Comment": f"seeded site {n} of {account}",
        "Enabled": True,
        "Origins": {
            "Quantity": 1,
            "Items": [
                {
                    "Id": "assets",
                    "DomainName": f"assets-{account}-{n}.s3.amazonaws.com",
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


def _run_instances(ec2: Any, image_id: str, count: int) -> list[str]:
    reservation = ec2.run_instances(
        ImageId=image_id,
        InstanceType="t3.micro",
        MinCount=count,
        MaxCount=count,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Role", "Value": "web"}]}],
    )
    return [str(instance["InstanceId"]) for instance in reservation["Instances"]]
