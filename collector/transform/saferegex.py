"""Regular expressions that come from containers (their `collector.*` labels, their log options),
compiled with RE2: matching takes time linear in the line, whatever the pattern.

Python's `re` backtracks: `(a+)+$` holds the event loop for seconds on a 25-byte line and
effectively forever on 33, and a thread with a time limit cannot be stopped. RE2 refuses what
needs backtracking (backreferences, lookaround): such a pattern is a `PatternError`, reported and
ignored for its container. Patterns in the collector's own config stay on `re` (written by the
operator, checked at startup).
"""

from __future__ import annotations

import functools
from typing import Any, Protocol


class Matcher(Protocol):
    """What processing needs of a compiled pattern; `re.Pattern[str]` has it too."""

    def search(self, string: str) -> Any: ...


class PatternError(ValueError):
    """RE2 cannot compile the pattern (a syntax error, or a feature that needs backtracking)."""


@functools.cache
def _re2() -> tuple[Any, Any]:
    """RE2 and its options, imported on the first container pattern: 2.4 MiB of RSS that hosts
    without such labels never pay."""
    import re2

    options = re2.Options()
    options.log_errors = False  # compile errors are raised, not also printed by RE2's own logging
    return re2, options


def compile_untrusted(text: str) -> Matcher:
    re2, options = _re2()
    try:
        return re2.compile(text, options=options)  # type: ignore[no-any-return]
    except re2.error as err:
        reason = err.args[0].decode(errors="replace") if err.args and isinstance(err.args[0], bytes) else str(err)
        raise PatternError(f"not a valid RE2 regular expression ({reason})") from None
