"""Secrets kept out of sight: every password met while resolving a target is remembered, so that
:func:`redact` can scrub it from any text that leaves the process (error messages, archives), and
a notebook parameter that carries one is refused before anything is written."""
from __future__ import annotations

import re
from urllib.parse import quote

from ..errors import TargetError

_SECRETS: set[str] = set()


def remember_secret(secret: str | None) -> None:
    if secret:
        _SECRETS.add(secret)
        _SECRETS.add(quote(secret, safe=""))


def known_secrets() -> frozenset[str]:
    return frozenset(_SECRETS)


_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s/]+)(?=@)", re.I)


def redact(text: str) -> str:
    """Hide every known password and any ``scheme://user:password@`` in ``text``."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + "***", text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def carries_password(value: object) -> bool:
    """Whether a value holds a URL with a password (``scheme://user:password@...``)."""
    return isinstance(value, str) and _URL_PASSWORD.search(value) is not None


def refuse_password(name: str, value: object) -> None:
    """Refuse a notebook parameter that carries a password: Papermill stores parameters in clear
    in the output notebook (and so in its HTML). Checked before anything is written."""
    if carries_password(value):
        raise TargetError(
            f"parameter {name} carries a password, and notebook parameters are stored in clear in the archive; "
            "pass a target name (dbrunbook.yaml) or env:VAR (the URL in an environment variable) instead")


def check_parameter_safe(ref: str) -> None:
    refuse_password("target", ref)
