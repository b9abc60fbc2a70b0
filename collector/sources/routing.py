"""Which way a container is read: from its json-file log, or through the Docker API stream, and why."""

from __future__ import annotations

import errno
import logging

from collector.preflight import CONTAINERS_DIR_FALLBACK, containers_dir_problem

log = logging.getLogger(__name__)

FILE_DRIVERS = frozenset({"json-file"})


def fallback_reason(err: OSError) -> str:
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission_denied"
    if err.errno == errno.ENOENT:
        return "file_not_found"
    return f"open_error_{errno.errorcode.get(err.errno or 0, 'unknown').lower()}"


def not_read_reason(container_id: str, log_driver: str, own_id: str | None) -> str:
    """Why a container is not read at all (before its profile is made), or ""."""
    if container_id == own_id:
        return "self"
    if log_driver == "none":
        return "driver_none"
    return ""


def stream_reason(log_driver: str, profile_mode: str, files_usable: bool, sources_mode: str, forced: str) -> str | None:
    """None: read its json-file log. Else read it through the stream, for the reason returned
    ("" for a driver with no file of ours, e.g. `local` or `journald`)."""
    if forced:
        return forced
    if profile_mode == "stream":
        return "label collector.mode=stream"
    if log_driver not in FILE_DRIVERS:
        return ""
    if files_usable:
        return None
    return "containers_dir_unreadable" if sources_mode != "stream" else ""


def is_fallback(reason: str) -> bool:
    """A stream read for a reason other than the container asking for it (nor a driver without a file)."""
    return bool(reason) and not reason.startswith("label ")


def files_usable(containers_dir: str, sources_mode: str) -> tuple[bool, str]:
    """Whether json-file logs can be read from their files at all, and if not, why."""
    if sources_mode == "stream":
        return False, "sources.mode is stream"
    problem = containers_dir_problem(containers_dir, sources_mode)
    if problem:
        log.warning(f"{problem}: {CONTAINERS_DIR_FALLBACK}")
    return not problem, problem
