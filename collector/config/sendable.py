"""What Loki and HTTP take from the settings sent with every push (the tenant, extra headers,
a token): checked at startup, since a value they refuse would fail every push."""

from __future__ import annotations

import re

# dskit's tenant.ValidTenantID, applied by Loki's push handler: any other tenant is a 400 at every push.
_TENANT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!-_.*'()")
_TENANT_MAX = 150
# RFC 9110 token (a header name); a header value may hold no control character but tab (aiohttp
# raises at every request otherwise).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def header_name_ok(name: str) -> bool:
    return _HEADER_NAME.fullmatch(name) is not None


def sendable_header_value(value: str) -> bool:
    return _HEADER_VALUE_FORBIDDEN.search(value) is None


def tenant_problem(tenant: str) -> str | None:
    """Why Loki would refuse `tenant` as X-Scope-OrgID, or None ("a|b" names two tenants)."""
    tenants = set(tenant.split("|"))
    if len(tenants) > 1:
        return "Loki takes one tenant per push ('|' joins several)"
    tenant_id = tenants.pop()
    bad = next((c for c in tenant_id if c not in _TENANT_CHARS), None)
    if bad is not None:
        return f"Loki refuses {bad!r} in a tenant (letters, digits and !-_.*'() only)"
    if len(tenant_id) > _TENANT_MAX:
        return f"Loki refuses a tenant over {_TENANT_MAX} characters"
    if tenant_id in (".", ".."):
        return "Loki refuses '.' and '..' as tenants"
    return None
