"""The function's time budget: never start work that cannot finish before the timeout."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Deadline"]


@dataclass(frozen=True, slots=True)
class Deadline:
    """Remaining time from the Lambda context, minus a safety margin for reporting back."""

    remaining_ms: Callable[[], int]
    margin_s: float = 3.0

    def remaining_s(self) -> float:
        return self.remaining_ms() / 1000.0 - self.margin_s

    def allows(self, seconds: float) -> bool:
        """True when ``seconds`` more of work still ends before the margin."""
        return self.remaining_s() >= seconds
