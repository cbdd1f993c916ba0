"""Credentials out of sight: passwords in URLs, and the values of secret settings, are masked
wherever URLs, settings or error messages are shown (pages, the API, the CLI, `./run`'s log)."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

#: What a password or a secret value is replaced by.
MASK = "***"

#: Names of settings whose values are secret. Celery's own list
#: (celery.app.utils.HIDDEN_SETTINGS: API|TOKEN|KEY|SECRET|PASS|SIGNATURE|DATABASE), less
#: DATABASE (a database URL is shown with its password masked instead), plus a few more.
SECRET_NAME = re.compile(r"API|TOKEN|KEY|SECRET|PASS|SIGNATURE|CREDENTIAL|PRIVATE", re.I)

#: A URL's scheme and authority (`scheme://[user[:password]@]host[:port]`). The user info runs
#: to the last "@" before a space or a ";" (Celery's list of failover URLs): a password may
#: hold "/", "?" or "#" (SQLAlchemy and redis-py accept them unencoded).
_AUTHORITY = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)"
                        r"(?P<netloc>[^\s;]*@[^/?#\s;@]*|[^/?#\s;]*)")
#: A whole URL, to find the ones in a setting's text.
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s;]+")
#: `password=...` in a query string or a libpq key/value DSN.
_PASSWORD_PARAM = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd)\s*=\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^\s&;'\"]+)", re.I)
#: Secret values shorter than this are not searched for in free text (they would match
#: innocent words); URL passwords are masked whatever their length.
MIN_SECRET_CHARS = 4


def _mask_netloc(match: re.Match[str]) -> str:
    netloc = match["netloc"]
    # As urllib.parse.urlsplit: the user info ends at the last "@" of the authority.
    userinfo, at, hostport = netloc.rpartition("@")
    if not at:
        return match[0]
    user, colon, password = userinfo.partition(":")
    if not colon or not password:
        return match[0]
    return f"{match['scheme']}{user}:{MASK}@{hostport}"


def mask_url(url: str | None) -> str | None:
    """The URL with its password (if any) replaced by MASK; user, host and path kept."""
    if url is None:
        return None
    return mask_text(str(url))


def mask_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Text (a log line, an error message) with the passwords of the URLs in it, `password=`
    parameters, and every occurrence of the given secret values, replaced by MASK."""
    text = _AUTHORITY.sub(_mask_netloc, text)
    text = _PASSWORD_PARAM.sub(lambda m: m["key"] + MASK, text)
    # Longest first, so a secret that contains another is masked whole.
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS},
                         key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def mask_value(name: str, value: Any) -> Any:
    """One setting as it may be shown: a secret's value masked, URLs in text masked."""
    if isinstance(value, Mapping):
        return mask_settings(value)
    if is_secret_name(name) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, (list, tuple)):
        return [mask_value(name, v) for v in value]
    return value


def mask_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a settings mapping fit to show: see mask_value."""
    return {key: mask_value(str(key), value) for key, value in settings.items()}


def url_passwords(*urls: str | None) -> list[str]:
    """The passwords in these URLs (to mask them where they might appear decoded)."""
    from urllib.parse import unquote

    found = []
    for url in urls:
        for match in _AUTHORITY.finditer(url or ""):
            userinfo, at, _ = match["netloc"].rpartition("@")
            password = userinfo.partition(":")[2] if at else ""
            if password:
                found += [password, unquote(password)]
    return found


def secret_values(settings: Mapping[str, Any]) -> list[str]:
    """The values of the secret settings and the URL passwords in a settings mapping (the
    Flask config, or the environment), to mask in free text such as log lines."""
    values: list[str] = []
    for key, value in settings.items():
        if not isinstance(value, str) or not value:
            continue
        if is_secret_name(str(key)):
            values.append(value)
        values += url_passwords(*_URL.findall(value))
    return values

