"""Finds credentials in captured test output: the integration suite's logs must hold none.

``tests/conftest.py`` feeds every integration test's captured stdout, stderr and log sections
to :data:`SCAN`; ``tests/integration/test_zz_logs_hold_no_secrets.py`` (collected last) asserts
that nothing was found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Access key ids (long-term AKIA, temporary ASIA), STS session tokens (the base64 of their
# binary header: "FQoGZXIvYXdz..." as moto and older STS issue them, "IQoJb3JpZ2lu..." today),
# and any secret key or token written next to its name.
PATTERNS = {
    "access key id": re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
    "session token": re.compile(r"(?:FQoGZXIvYXdz|FwoGZXIvYXdz|IQoJb3JpZ2lu)[A-Za-z0-9/+=]{16,}"),
    "secret access key": re.compile(
        r"(?i)(?:secret_?access_?key|aws_secret_access_key|secret_key)\W{1,4}[A-Za-z0-9/+=]{40}"
    ),
    "session token field": re.compile(
        r"(?i)(?:session_?token|aws_session_token)\W{1,4}[A-Za-z0-9/+=]{40,}"
    ),
}


def find_secrets(text: str) -> list[str]:
    """Kinds of credentials found in ``text`` (empty when clean)."""
    return [kind for kind, pattern in PATTERNS.items() if pattern.search(text)]


@dataclass
class Scan:
    sections: int = 0
    characters: int = 0
    findings: list[str] = field(default_factory=list)

    def add(self, where: str, text: str) -> None:
        self.sections += 1
        self.characters += len(text)
        self.findings.extend(f"{where}: {kind}" for kind in find_secrets(text))


SCAN = Scan()
