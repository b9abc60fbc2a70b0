"""Pure: keeping the Loki credentials out of everything an operator or a scraper sees.

Two ways, both needed: where the shape is known (the config printed by check-config, a URL) the
secret parts are replaced by `***`; free text that may quote them (an exception's message, an
answer body that echoes the request, as some gateways' error pages do) goes through a `Redactor`
holding every secret value the config has.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
# Headers that carry no credential and are worth seeing in check-config; every other value is masked.
_PLAIN_HEADERS = frozenset({"x-scope-orgid", "user-agent", "content-type", "accept", "content-encoding"})


def masked_url(url: str) -> str:
    """The URL with a password in it replaced by ***."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # e.g. a port that is not a number: keep nothing after the scheme
        return url.split("://", 1)[0] + "://" + MASK if "@" in url else url
    if password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{MASK}@{host}"))


def url_has_credentials(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return bool(parts.username or parts.password)
    except ValueError:
        return False


def masked_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: value if name.lower() in _PLAIN_HEADERS else MASK for name, value in headers.items()}


def secret_values(url: str, username: str, password: str, bearer_token: str, headers: Mapping[str, str]) -> list[str]:
    """Every string that must never be shown: passwords and tokens, the URL's password (as written
    and decoded), credential header values, and the Basic header's encoded user:password."""
    try:
        parts = urlsplit(url)
        url_user, url_password = parts.username or "", parts.password or ""
    except ValueError:
        url_user, url_password = "", ""
    found = [password, bearer_token, url_password, unquote(url_password)]
    for name, value in headers.items():
        if name.lower() not in _PLAIN_HEADERS:
            # "Bearer abc...": the token alone may be quoted too.
            found += [value, *(word for word in value.split() if len(word) >= 8)]
    for user, secret in ((username, password), (unquote(url_user), unquote(url_password))):
        if secret:
            found.append(base64.b64encode(f"{user}:{secret}".encode()).decode())
    return [value for value in found if value]


class Redactor:
    """Replaces each secret value found in a text with ***. Longest first, so a secret that
    contains another is masked whole."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({secret for secret in secrets if secret}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text
