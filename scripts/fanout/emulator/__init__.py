"""An embedded AWS: moto in server mode, made faithful where fanout depends on it, and a seeded
organisation.

A server rather than ``mock_aws``: the worker, the poller and the publisher reach it over HTTP
through ``AWS_ENDPOINT_URL``, exactly as they reach AWS, so the local path runs the same boto3
code, credential chain and STS calls as production. Credentials returned by ``AssumeRole`` into
``arn:aws:iam::<account>:role/...`` act as that account, so each target account has its own
distributions, instances and SSM commands. moto keeps its state in module globals: every
emulator started in one process shares it (and ``mock_aws`` resets it).

:func:`start_emulator` is the only way the project starts moto: it serves moto's WSGI app behind
the patches below (``middleware``), so no test, benchmark or CLI verb can run on a moto that
lies. docs/emulator.md has the evidence for each patch.

Where plain moto is not faithful, and what the emulator does instead:

- **DynamoDB** (``dynamodb``): moto checks a ConditionExpression and writes in separate steps,
  so concurrent conditional writes on one key can both succeed (1-10 of 80 keys claimed twice
  under load). Every DynamoDB request is served under one lock; TransactWriteItems checks every
  condition, then writes (all or nothing), copying only the items it touches, and honours
  ``ClientRequestToken`` for ten minutes.
- **CloudFront** (``cloudfront``): moto creates an invalidation per request. The same
  CallerReference with the same paths returns the first invalidation; with other paths it is
  ``InvalidationBatchAlreadyExists`` (409); paths must begin with '/'.
- **SSM** (``ssm``): moto's ListCommands ignores ``Filters``, ``MaxResults`` and ``NextToken``.
  They are applied to its answer (newest first, pages of at most 50). moto's SendCommand by
  ``InstanceIds`` also ran on every other instance of the account; now on those named only.
- **SQS** (``sqs``): moto lacks the message-move tasks (DLQ redrive) and logs a traceback per
  call. Start/List/CancelMessageMoveTask run a mover thread that re-sends each message (new id,
  same body, attributes and group id) to the destination.
- **SQS delivery** (``sqs_delivery``, patched into moto's model by ``emulator_app``): moto's
  delete rebuilds a queue's message list outside the lock its sends take (a concurrent send can
  be dropped). Deletes, visibility changes, purges and receive passes hold the queue's lock, and
  a standard queue delivers as an SQS fair queue (quiet tenants, by MessageGroupId, first).
- **CPU** (``moto_costs``, not a fidelity patch): update expressions parsed once, validated on a
  pickled copy, checked for their text alone once; SQS retention read directly. moto answers the
  same, at about a quarter of the DynamoDB cost (docs/emulator.md, section 8).
- **Ids** (``ids``): moto's ids are random; the seeder can ask for the fixed ids the sample
  events name (``seed_organisation(stable_ids=True)``), and for fixed member account ids
  (``seed_org_tree``: an AWS Organization of 42 accounts in nested OUs, tagged, one suspended).

Still not faithful (test those paths with fakes): STS enforces no trust policy, ExternalId or
session policy; SSM SendCommand accepts unknown instances and documents and answers Success;
ListCommandInvocations is not implemented; Lambda Invoke needs Docker (moto's Docker-less mode
answers with the payload without running the function); there is no throttling (the proxy adds it).

Modules: ``server`` (start_emulator), ``middleware`` (the WSGI layer), ``wire`` (signed requests
and protocol-shaped errors), one module per patch, ``seed`` (the organisation), ``proxy`` (the
counting, throttling, fault-injecting HTTP proxy of the fault suite and the benchmarks).
"""

from fanout.emulator.organization import OrgTree, seed_org_tree
from fanout.emulator.seed import (
    DEFAULT_TARGET_ACCOUNTS,
    FAKE_CREDENTIALS,
    OPS_ACCOUNT,
    STABLE_IDS,
    TARGET_ROLE_NAME,
    Organisation,
    Queues,
    StableResources,
    TargetAccount,
    assume_session,
    assumed_role_sessions,
    capture_events,
    create_ledger_table,
    create_queues,
    fake_session,
    seed_distributions,
    seed_organisation,
)
from fanout.emulator.server import Emulator, emulator_app, fidelity_patches, start_emulator

__all__ = [
    "DEFAULT_TARGET_ACCOUNTS",
    "FAKE_CREDENTIALS",
    "OPS_ACCOUNT",
    "STABLE_IDS",
    "TARGET_ROLE_NAME",
    "Emulator",
    "OrgTree",
    "Organisation",
    "Queues",
    "StableResources",
    "TargetAccount",
    "assume_session",
    "assumed_role_sessions",
    "capture_events",
    "create_ledger_table",
    "create_queues",
    "emulator_app",
    "fake_session",
    "fidelity_patches",
    "seed_distributions",
    "seed_org_tree",
    "seed_organisation",
    "start_emulator",
]
