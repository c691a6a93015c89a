"""CloudFront CreateInvalidation: CallerReference idempotency and path validation.

moto creates a new invalidation for every request. CloudFront uses the CallerReference to
prevent a resubmitted request from creating a second invalidation: the same reference with the
same paths returns the invalidation created first, the same reference with other paths is an
``InvalidationBatchAlreadyExists`` error. Paths must begin with '/'.

Paths are compared as a set: CloudFront does not keep their order (it lists a batch's paths in
an order of its own), and the worker sends them sorted anyway.
"""

from __future__ import annotations

import re
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Final

from fanout.emulator.middleware import Call, Forward, Handler, Head, ServiceError
from fanout.emulator.wire import Reply

__all__ = ["CallerReferenceIdempotency"]

_CREATE_INVALIDATION: Final = re.compile(r"^/2020-05-31/distribution/([^/]+)/invalidation$")


@dataclass(frozen=True, slots=True)
class _Created:
    paths: frozenset[str]
    invalidation_id: str
    reply: Reply


_LOCK: Final = threading.Lock()
_CREATED: Final[dict[tuple[str, str, str], _Created]] = {}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _batch(body: bytes) -> tuple[str, list[str]] | None:
    """(CallerReference, paths) of an InvalidationBatch document; None if it is not one."""
    try:
        root = ET.fromstring(body)  # noqa: S314 - a local client's request to the emulator
    except ET.ParseError:
        return None
    reference = next(
        (e.text or "" for e in root.iter() if _local(e.tag) == "CallerReference"), None
    )
    if reference is None:
        return None
    paths = [e.text or "" for e in root.iter() if _local(e.tag) == "Path"]
    return reference, paths


def _invalidation_id(reply: Reply) -> str | None:
    try:
        root = ET.fromstring(reply.body)  # noqa: S314 - moto's answer
    except ET.ParseError:
        return None
    return next((e.text for e in root if _local(e.tag) == "Id"), None)


def _exists(account: str, distribution_id: str, invalidation_id: str) -> bool:
    """Is that invalidation still in moto's state (``mock_aws`` in the same process resets it)?"""
    from moto.cloudfront.models import cloudfront_backends  # noqa: PLC0415 - moto internals

    backend = cloudfront_backends[account]["global"]
    return any(i.id == invalidation_id for i in backend.invalidations.get(distribution_id, ()))


class CallerReferenceIdempotency:
    """The patch: remembers (account, distribution, CallerReference) -> the first answer."""

    name = "cloudfront-caller-reference"

    def __init__(self) -> None:
        # Process-wide, as moto's state is: two emulators in one process share distributions.
        self._lock = _LOCK
        self._created = _CREATED

    def handler(self, head: Head) -> Handler | None:
        if head.method == "POST" and _CREATE_INVALIDATION.match(head.path):
            return self._create_invalidation
        return None

    def close(self) -> None:
        """Nothing runs in the background."""

    def _create_invalidation(self, call: Call, forward: Forward) -> Reply:
        match = _CREATE_INVALIDATION.match(call.path)
        batch = _batch(call.body)
        if match is None or batch is None:
            return forward()  # moto answers a malformed request
        distribution_id = match.group(1)
        reference, paths = batch
        if any(not path.startswith("/") for path in paths):
            raise ServiceError(
                400,
                "InvalidArgument",
                "Your request contains one or more invalid invalidation paths.",
            )
        key = (call.account, distribution_id, reference)
        # One lock across the check and the create: two concurrent requests with one reference
        # must not both create an invalidation.
        with self._lock:
            created = self._created.get(key)
            if created is not None and not _exists(*key[:2], created.invalidation_id):
                created = None
                del self._created[key]
            if created is not None:
                if created.paths != frozenset(paths):
                    raise ServiceError(
                        409,
                        "InvalidationBatchAlreadyExists",
                        f"The CallerReference {reference} was used before with other paths.",
                    )
                return created.reply
            reply = forward()
            invalidation_id = _invalidation_id(reply) if reply.status == 201 else None
            if invalidation_id is not None:
                self._created[key] = _Created(frozenset(paths), invalidation_id, reply)
            return reply
