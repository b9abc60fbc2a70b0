"""Which way a container is read: from its json-file log, or through the Docker API stream, and why."""

from __future__ import annotations

import errno

FILE_DRIVERS = frozenset({"json-file"})


def fallback_reason(err: OSError) -> str:
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission_denied"
    if err.errno == errno.ENOENT:
        return "file_not_found"
    return f"open_error_{errno.errorcode.get(err.errno or 0, 'unknown').lower()}"
