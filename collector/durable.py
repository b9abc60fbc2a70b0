"""What makes a write survive a power cut, shared by the positions file and the spool."""

from __future__ import annotations

import os


def fsync_directory(directory: str) -> None:
    """Make a create, rename or unlink in `directory` durable: without it a power cut can bring the
    old directory entry back."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
