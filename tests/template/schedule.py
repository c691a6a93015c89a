"""EventBridge Scheduler, as far as the template's schedule needs it: a fake clock that fires a
daily ``cron(M H * * ? *)`` expression, and the context attributes Scheduler puts into a target's
input when it delivers (Scheduler User Guide, "Adding context attributes"):

- ``<aws.scheduler.scheduled-time>``: the time the run was scheduled for (``2022-03-22T18:59:43Z``),
  the same for every attempt of that run;
- ``<aws.scheduler.execution-id>``: an id per attempted invocation;
- ``<aws.scheduler.attempt-number>``: the attempt of the current invocation (1, 2, ...);
- ``<aws.scheduler.schedule-arn>``.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["Delivery", "FakeClock", "render"]

_DAILY_CRON = re.compile(r"^cron\((\d{1,2}) (\d{1,2}) \* \* \? \*\)$")


@dataclass
class FakeClock:
    """UTC time that moves only when told to."""

    now: datetime

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    def next_run(self, expression: str) -> datetime:
        """The first run of a daily cron expression at or after now."""
        match = _DAILY_CRON.match(expression)
        if match is None:
            raise ValueError(f"only daily cron(M H * * ? *) expressions are modelled: {expression}")
        minute, hour = int(match.group(1)), int(match.group(2))
        run = self.now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        return run if run >= self.now else run + timedelta(days=1)


@dataclass(frozen=True)
class Delivery:
    """One attempt of one run."""

    scheduled_time: datetime
    attempt: int = 1
    execution_id: str = ""
    schedule_arn: str = "arn:aws:scheduler:us-east-1:123456789012:schedule/default/fanout-test"


def render(input_template: str, delivery: Delivery) -> str:
    """The target input as Scheduler delivers it for ``delivery``."""
    values = {
        "scheduled-time": delivery.scheduled_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "execution-id": delivery.execution_id or uuid.uuid4().hex[:16],
        "attempt-number": str(delivery.attempt),
        "schedule-arn": delivery.schedule_arn,
    }
    rendered = input_template
    for name, value in values.items():
        rendered = rendered.replace(f"<aws.scheduler.{name}>", value)
    return rendered
