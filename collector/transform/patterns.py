"""Name patterns in config: a glob (`web-*`), or a regular expression when written `/.../`."""

from __future__ import annotations

import fnmatch
import re


def compile_pattern(text: str) -> re.Pattern[str]:
    """Raises re.error for a bad regular expression."""
    if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
        return re.compile(text[1:-1])
    return re.compile(fnmatch.translate(text))


def matches(pattern: re.Pattern[str], value: str) -> bool:
    return pattern.fullmatch(value) is not None
