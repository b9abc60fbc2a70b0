"""The optional C accelerator (collector/_speedups.c), or None.

It does what two pure-Python hot loops do, faster: `sources/jsonfile.py` (usual json-file records
-> entries) and `sinks/lokiproto.py` (entries -> protobuf). The Python code stays the reference:
the tests compare both byte for byte, and run the Python path too. Without a compiler at install
time the module is absent and the Python code runs; COLLECTOR_NO_SPEEDUPS=1 chooses it anyway
(as AIOHTTP_NO_EXTENSIONS does for aiohttp).
"""

from __future__ import annotations

import os
from types import ModuleType


def _load() -> ModuleType | None:
    if os.environ.get("COLLECTOR_NO_SPEEDUPS", "") not in ("", "0"):
        return None
    try:
        from collector import _speedups
    except ImportError:
        return None
    return _speedups


speedups = _load()
