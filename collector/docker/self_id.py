"""Which container this process runs in, so it never reads (and loops on) its own log."""

from __future__ import annotations

import re

_CONTAINER_ID = re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])")
# mountinfo: Docker bind-mounts /etc/hostname etc. from <data-root>/containers/<id>/ (cgroup v1 and v2).
_MOUNT_ID = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)")


def id_from_mountinfo(text: str) -> str | None:
    match = _MOUNT_ID.search(text)
    return match.group(1) if match else None


def id_from_cgroup(text: str) -> str | None:
    """cgroup v1 `.../docker/<id>` or systemd `docker-<id>.scope`; v2 in a private namespace shows `0::/`."""
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        if "docker" not in path and "containerd" not in path:
            continue
        match = _CONTAINER_ID.search(path)
        if match:
            return match.group(1)
    return None


def own_container_id(proc: str = "/proc/self") -> str | None:
    for name, finder in (("mountinfo", id_from_mountinfo), ("cgroup", id_from_cgroup)):
        try:
            with open(f"{proc}/{name}") as handle:
                found = finder(handle.read())
        except OSError:
            continue
        if found:
            return found
    return None
