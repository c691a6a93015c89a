"""Who may be targeted: checked for a whole message before any STS call is made."""

from __future__ import annotations

from handler.credentials import SessionCache
from handler.envelope import Envelope
from handler.exceptions import BadMessageError
from handler.settings import Settings

__all__ = ["authorize"]


def authorize(envelope: Envelope, settings: Settings, sessions: SessionCache) -> None:
    """Refuse the message if any target is out of bounds; nothing of it runs then."""
    if len(envelope.jobs) > settings.max_targets_per_message:
        raise BadMessageError(
            f"message has {len(envelope.jobs)} targets; MAX_TARGETS_PER_MESSAGE is "
            f"{settings.max_targets_per_message}"
        )
    for job in envelope.jobs:
        sessions.check_target(job.account, job.region)
