"""The console's settings, and who may change rules: read-only unless started to allow it, and then
only a request carrying the token.

The token travels in a header (``X-Aisle-Console-Token``), never in a URL (URLs end up in logs and
browser history), and is compared in constant time (``hmac.compare_digest``): how long a refusal
takes says nothing about how much of a guess was right.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path

TOKEN_HEADER = "X-Aisle-Console-Token"
#: The environment variable ``aisle console`` reads the token from (a command line is visible to ``ps``).
TOKEN_ENV = "AISLE_CONSOLE_TOKEN"
#: Shortest token accepted: a guessable one would make the flag pointless.
MIN_TOKEN_CHARS = 16


class Refused(Exception):
    """A rule change the console does not allow: ``status`` is the HTTP status it answers."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ConsoleSettings:
    """What ``aisle console`` was started with."""

    url: str  # the served Aisle's gRPC host:port
    state: str | None = None  # the state store's URL (events, catalog changes); None: those panels say so
    reports: Path | None = None  # a directory of experiment reports (.md with their .png)
    catalog: Path | None = None  # the catalog file the index was built from: titles beside item ids
    allow_rule_changes: bool = False
    token: str = field(default="", repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # gRPC headers for every call
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.allow_rule_changes and len(self.token) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"--allow-rule-changes needs a token of at least {MIN_TOKEN_CHARS} characters in ${TOKEN_ENV}"
            )


def check_rule_change(settings: ConsoleSettings, presented: str | None) -> None:
    """Raise ``Refused`` unless rule changes are allowed and ``presented`` is the token."""
    if not settings.allow_rule_changes:
        raise Refused(
            403, "this console is read-only: start it with --allow-rule-changes (and a token) to set or roll back rules"
        )
    if not presented:
        raise Refused(401, f"changing rules needs the console's token in the {TOKEN_HEADER} header")
    if not hmac.compare_digest(presented.encode("utf-8"), settings.token.encode("utf-8")):
        raise Refused(401, f"the {TOKEN_HEADER} header does not match the console's token")
