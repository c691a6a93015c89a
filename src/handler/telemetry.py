"""Per-batch metrics (CloudWatch EMF through Powertools): totals, and a breakdown per task.

Counted on the worker's thread after dispatch; published once per invocation by the handler.
Totals carry only the ``service`` dimension (what the template's alarms watch); the per-task
lines add a ``task`` dimension for the dashboard.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

__all__ = ["COUNTERS", "BatchMetrics"]

MAX_DURATION_VALUES = 99
COUNTERS = (
    "JobsSucceeded",
    "JobsFailed",
    "JobsDeferred",
    "JobsDeadLettered",
    "MessagesDeadLettered",
    "Throttles",
    # Requests this worker finished, by how they ended.
    "RequestsSucceeded",
    "RequestsFailed",
    "RequestsCancelled",
    "RequestsStopped",
)


@dataclass
class BatchMetrics:
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # (metric, task)
    durations_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, metric: str, task: str, value: int = 1) -> None:
        if value:
            with self._lock:
                self.counts[(metric, task)] += value

    def duration(self, task: str, seconds: float) -> None:
        with self._lock:
            self.durations_ms[task].append(seconds * 1000.0)

    def total(self, metric: str) -> int:
        return sum(v for (name, _), v in self.counts.items() if name == metric)

    def publish(self, metrics: Metrics) -> None:
        if is_metrics_disabled():
            return  # nothing is flushed then, so nothing may pile up across warm invocations
        for name in COUNTERS:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=self.total(name))
        durations = [v for values in self.durations_ms.values() for v in values]
        # EMF keeps at most 100 values per metric, and Powertools flushes early at 100.
        for value in durations[:MAX_DURATION_VALUES]:
            metrics.add_metric(name="JobDuration", unit=MetricUnit.Milliseconds, value=value)
        dimensions = {"service": metrics.service or "fanout"}
        for (name, task), value in sorted(self.counts.items()):
            if task:
                with single_metric(
                    name=name,
                    unit=MetricUnit.Count,
                    value=value,
                    namespace=metrics.namespace,
                    default_dimensions={**dimensions, "task": task},
                ):
                    pass
