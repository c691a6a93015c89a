"""SQS message-move tasks (DLQ redrive), which moto does not implement.

``StartMessageMoveTask`` starts an asynchronous task that moves the source (dead-letter) queue's
messages to ``DestinationArn``, or, without one, back to the queue whose redrive policy names the
source as its DLQ. As SQS does, a moved message is a new message (new message id, new enqueue
time, attempts counted anew) with the same body, message attributes and MessageGroupId. The
task runs on a thread of its own, at ``MaxNumberOfMessagesPerSecond`` when given;
``ListMessageMoveTasks`` reports it (``RUNNING``, then ``COMPLETED``, ``CANCELLING``/
``CANCELLED`` or ``FAILED``) and ``CancelMessageMoveTask`` stops it, keeping what it moved.

Limits of the emulator, each answered with an error rather than guessed: moto does not record
which queue a dead letter came from, so without ``DestinationArn`` the source must be the DLQ of
exactly one queue; a task moves the messages visible when it started (at most that many).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Final

from fanout.emulator.middleware import Call, Forward, Handler, Head, ServiceError
from fanout.emulator.wire import Reply

__all__ = ["MessageMoveTasks"]

_PREFIX: Final = "AmazonSQS."
_OPERATIONS: Final = frozenset(
    {"StartMessageMoveTask", "ListMessageMoveTasks", "CancelMessageMoveTask"}
)
_ERROR_PREFIX: Final = "com.amazonaws.sqs"
MAX_RATE: Final = 500
MAX_LISTED: Final = 10
# A message the mover received stays hidden this long if the mover stops between receive and
# delete; long enough that a slow machine never shows it twice.
_MOVER_VISIBILITY_SECONDS: Final = 60
_JSON: Final = [("Content-Type", "application/x-amz-json-1.0")]


_LOCK: Final = threading.Lock()
_TASKS: Final[dict[str, list[_Task]]] = {}  # source ARN -> tasks, newest first


def _error(code: str, message: str) -> ServiceError:
    return ServiceError(400, code, message, type_prefix=_ERROR_PREFIX)


def _not_found(what: str) -> ServiceError:
    return _error(
        "ResourceNotFoundException",
        f"The resource that you specified for the {what} parameter doesn't exist.",
    )


@dataclass(frozen=True, slots=True)
class _QueueRef:
    account: str
    region: str
    name: str

    @property
    def arn(self) -> str:
        return f"arn:aws:sqs:{self.region}:{self.account}:{self.name}"

    def backend(self) -> Any:
        from moto.sqs.models import sqs_backends  # noqa: PLC0415 - moto internals

        return sqs_backends[self.account][self.region]

    def queue(self) -> Any:
        from moto.sqs.exceptions import QueueDoesNotExist  # noqa: PLC0415

        try:
            return self.backend().get_queue(self.name)
        except QueueDoesNotExist:
            return None


def _queue_ref(arn: Any, what: str) -> _QueueRef:
    parts = str(arn).split(":") if isinstance(arn, str) else []
    if len(parts) != 6 or parts[:3] != ["arn", "aws", "sqs"]:
        raise _not_found(what)
    ref = _QueueRef(parts[4], parts[3], parts[5])
    if ref.queue() is None:
        raise _not_found(what)
    return ref


@dataclass
class _Task:
    task_id: str
    source: _QueueRef
    destination: _QueueRef
    destination_arn: str | None  # as given
    rate: int | None
    started_ms: int
    to_move: int
    moved: int = 0
    status: str = "RUNNING"
    failure: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def handle(self) -> str:
        token = {"taskId": self.task_id, "sourceArn": self.source.arn}
        return base64.b64encode(json.dumps(token).encode()).decode()

    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "Status": self.status,
            "SourceArn": self.source.arn,
            "ApproximateNumberOfMessagesMoved": self.moved,
            "ApproximateNumberOfMessagesToMove": self.to_move,
            "StartedTimestamp": self.started_ms,
        }
        if self.status == "RUNNING":  # the service shows the handle of running tasks only
            entry["TaskHandle"] = self.handle
        if self.destination_arn is not None:
            entry["DestinationArn"] = self.destination_arn
        if self.rate is not None:
            entry["MaxNumberOfMessagesPerSecond"] = self.rate
        if self.failure is not None:
            entry["FailureReason"] = self.failure
        return entry


class MessageMoveTasks:
    """The patch: Start/List/CancelMessageMoveTask (JSON protocol, as boto3 sends them)."""

    name = "sqs-message-move-tasks"

    def __init__(self) -> None:
        # Process-wide, as moto's queues are: one active task per queue across emulators.
        self._lock = _LOCK
        self._tasks = _TASKS
        self._started: list[_Task] = []

    def handler(self, head: Head) -> Handler | None:
        operation = head.target.removeprefix(_PREFIX)
        if head.target.startswith(_PREFIX) and operation in _OPERATIONS:
            return getattr(self, "_" + operation)  # type: ignore[no-any-return]
        return None

    def close(self) -> None:
        """Stop the tasks this emulator started (it is stopping)."""
        with self._lock:
            for task in self._started:
                task.stop.set()

    def _reply(self, document: dict[str, Any]) -> Reply:
        return Reply(200, list(_JSON), json.dumps(document).encode())

    def _StartMessageMoveTask(self, call: Call, _forward: Forward) -> Reply:  # noqa: N802
        request = call.json
        source = _queue_ref(request.get("SourceArn"), "SourceArn")
        feeding = [
            q
            for q in source.backend().queues.values()
            if q.redrive_policy and q.redrive_policy.get("deadLetterTargetArn") == source.arn
        ]
        if not feeding:
            raise _error(
                "InvalidParameterValue", "Source queue must be configured as a Dead Letter Queue."
            )
        destination_arn = request.get("DestinationArn")
        if destination_arn is not None:
            destination = _queue_ref(destination_arn, "DestinationArn")
        elif len(feeding) == 1:
            destination = _QueueRef(source.account, source.region, feeding[0].name)
        else:
            raise _error(
                "InvalidParameterValue",
                "the emulator does not record which source queue each dead letter came from: "
                f"{source.name} is the DLQ of {len(feeding)} queues, give DestinationArn",
            )
        if destination.arn == source.arn:
            raise _error("InvalidParameterValue", "The source and destination queues are the same.")
        rate = request.get("MaxNumberOfMessagesPerSecond")
        if rate is not None and not (isinstance(rate, int) and 1 <= rate <= MAX_RATE):
            raise _error(
                "InvalidParameterValue", f"MaxNumberOfMessagesPerSecond must be 1-{MAX_RATE}."
            )
        with self._lock:
            tasks = self._tasks.setdefault(source.arn, [])
            if any(t.status in ("RUNNING", "CANCELLING") for t in tasks):
                raise _error(
                    "InvalidParameterValue",
                    "There is already a task running. Only one active task is allowed for a "
                    "source queue arn at a given time.",
                )
            task = _Task(
                task_id=str(uuid.uuid4()),
                source=source,
                destination=destination,
                destination_arn=destination_arn,
                rate=rate,
                started_ms=int(time.time() * 1000),
                to_move=len(source.queue().messages),
            )
            tasks.insert(0, task)
            self._started.append(task)
        threading.Thread(
            target=self._move, args=(task,), name=f"move-task-{source.name}", daemon=True
        ).start()
        return self._reply({"TaskHandle": task.handle})

    def _ListMessageMoveTasks(self, call: Call, _forward: Forward) -> Reply:  # noqa: N802
        request = call.json
        source = _queue_ref(request.get("SourceArn"), "SourceArn")
        limit = request.get("MaxResults", 1)
        if not (isinstance(limit, int) and 1 <= limit <= MAX_LISTED):
            raise _error("InvalidParameterValue", f"MaxResults must be 1-{MAX_LISTED}.")
        with self._lock:
            entries = [t.entry() for t in self._tasks.get(source.arn, [])[:limit]]
        return self._reply({"Results": entries})

    def _CancelMessageMoveTask(self, call: Call, _forward: Forward) -> Reply:  # noqa: N802
        handle = str(call.json.get("TaskHandle", ""))
        try:
            token = json.loads(base64.b64decode(handle.encode(), validate=True))
            task_id, source_arn = str(token["taskId"]), str(token["sourceArn"])
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise _error("ResourceNotFoundException", "Task does not exist.") from exc
        with self._lock:
            task = next((t for t in self._tasks.get(source_arn, []) if t.task_id == task_id), None)
            if task is None:
                raise _error("ResourceNotFoundException", "Task does not exist.")
            if task.status != "RUNNING":
                raise _error(
                    "UnsupportedOperation",
                    f"Task is {task.status}: only a RUNNING task can be cancelled.",
                )
            task.status = "CANCELLING"
            task.stop.set()
            return self._reply({"ApproximateNumberOfMessagesMoved": task.moved})

    # -- the mover ----------------------------------------------------------------------------

    def _finish(self, task: _Task, status: str, failure: str | None = None) -> None:
        with self._lock:
            task.status = status
            task.failure = failure

    def _move(self, task: _Task) -> None:
        source, destination = task.source.backend(), task.destination.backend()
        started = time.monotonic()
        try:
            while task.moved < task.to_move and not task.stop.is_set():
                batch = 1 if task.rate is not None else min(10, task.to_move - task.moved)
                messages = source.receive_message(
                    task.source.name, batch, 0, _MOVER_VISIBILITY_SECONDS, ["All"]
                )
                if not messages:
                    break
                for n, message in enumerate(messages):
                    if task.stop.is_set():
                        for unmoved in messages[n:]:
                            source.change_message_visibility(
                                task.source.name, unmoved.receipt_handle, visibility_timeout=0
                            )
                        break
                    destination.send_message(
                        task.destination.name,
                        message.body,
                        message_attributes=copy.deepcopy(message.message_attributes),
                        group_id=message.group_id,  # the tenant of a fair queue
                    )
                    source.delete_message(task.source.name, message.receipt_handle)
                    with self._lock:
                        task.moved += 1
                if task.rate is not None:
                    # The next message leaves at started + moved / rate.
                    task.stop.wait(max(0.0, started + task.moved / task.rate - time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - a task that fails reports why, as SQS does
            self._finish(task, "FAILED", f"{type(exc).__name__}: {exc}")
            return
        self._finish(task, "CANCELLED" if task.stop.is_set() else "COMPLETED")
