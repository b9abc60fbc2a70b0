"""What the Loki sink tells /ready: since when no push was answered usefully, and why Loki refuses
the pushes (a hold: a credential, a wrong URL, blocked ingestion), as whole sentences."""

from __future__ import annotations

import logging
import math
import time

from collector.sinks.answer import Verdict, sentence

log = logging.getLogger(__name__)

HOLD_LOG_INTERVAL = 60.0  # a refused push (401/403/404, blocked ingestion) is logged at most once a minute


class SinkHealth:
    def __init__(self) -> None:
        self.failing_since: float | None = None
        self.hold = ""  # why Loki refuses every push; "" while it does not
        self.last_answer = ""  # Loki's last answer (or the connection error) as short text
        self._last_hold_log = -math.inf

    def answered(self, status: int, text: str) -> None:
        self.last_answer = f"HTTP {status}: {sentence(text, 200)}" if status else sentence(text, 200)

    def failing(self, now: float, retrying: bool) -> None:
        if self.failing_since is None:
            self.failing_since = now
        if retrying:
            self.hold = ""  # e.g. a 401 turned into a 503: no longer a credentials problem

    def working(self, status: int) -> None:
        self.failing_since = None
        if self.hold:
            log.info("Loki accepts pushes again", extra={"status": status})
            self.hold = ""

    def holding(self, verdict: Verdict, retry_every: float, now: float, error: str) -> None:
        self.hold = hold_sentence(verdict, retry_every)
        if now - self._last_hold_log >= HOLD_LOG_INTERVAL:
            self._last_hold_log = now
            log.error("Loki refuses the pushes; holding every entry and retrying",
                      extra={"error": error, "why": self.hold, "retry_in_s": retry_every})

    def not_ready_reason(self, now: float, not_ready_after: float, last_error: str) -> str | None:
        """A whole sentence when the sink cannot deliver (at once on a refusal such as 401, after
        `not_ready_after` seconds of failures otherwise); None when it delivers."""
        if self.hold:
            return self.hold
        if self.failing_since is None:
            return None
        failing_for = now - self.failing_since
        if failing_for < not_ready_after:
            return None
        error = last_error.rstrip(".")
        end = "" if error.endswith("…") else "."  # shortened at a word boundary: the ellipsis ends it
        return f"Loki has accepted no push for {failing_for:.0f} s; the last attempt failed with {error}{end}"


def hold_sentence(verdict: Verdict, retry_every: float) -> str:
    if verdict.reason == "blocked":
        until = (f" until {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(verdict.until_wall))}"
                 if verdict.until_wall else "")
        return (f"Loki blocks ingestion for this tenant{until} (limits_config.block_ingestion_until); nothing is stored. "
                f"Every entry is kept and retried every {retry_every:g} s.")
    status = int(verdict.reason.removeprefix("http_"))
    what = {
        401: "HTTP 401 Unauthorized: check loki.username and loki.password, or loki.bearer_token",
        403: "HTTP 403 Forbidden: check the credentials and loki.tenant",
        404: "HTTP 404 Not Found: check loki.url (the push path is /loki/api/v1/push)",
        405: "HTTP 405 Method Not Allowed: check loki.url (the push path is /loki/api/v1/push)",
        407: "HTTP 407 Proxy Authentication Required: check the proxy credentials",
    }.get(status, f"HTTP {status}")
    return f"Loki refuses the pushes with {what}. Every entry is kept and retried every {retry_every:g} s."
