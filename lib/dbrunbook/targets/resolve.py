"""Targets: a name (``dev``, ``prod``, ...), ``env:VAR`` or a raw URL, resolved to a database.

Only the *reference* ever reaches a notebook parameter, an output or a log; the resolved URL,
which may carry a password, stays inside this module's :class:`Target` and is shown redacted
(every password met here is remembered by :mod:`dbrunbook.targets.secrets`).
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import sqlalchemy as sa

from ..config import GroupConfig, load_config
from ..dialects import Dialect
from ..errors import TargetError
from . import embedded
from .secrets import redact, remember_secret

ENV_PREFIX = "env:"
DEFAULT_EMBEDDED = {"dev": "app_dev", "prod": "app_prod"}
LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1"}
SUPPORTED = tuple(Dialect)



@dataclass(frozen=True)
class Target:
    """A resolved target. ``name`` is safe to show; ``url`` is not."""

    name: str
    url: sa.URL = field(repr=False)
    production: bool
    embedded_db: str | None = None

    @property
    def dialect(self) -> Dialect:
        return Dialect(self.url.get_backend_name())

    @property
    def display_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def __str__(self) -> str:
        return self.name


def parse_url(raw: str) -> sa.URL:
    raw = raw.strip()
    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw[len("postgres://"):]
    try:
        url = sa.make_url(raw)
    except Exception:
        raise TargetError(f"not a database URL: {redact(raw)}") from None
    if url.get_backend_name() not in SUPPORTED:
        raise TargetError(f"{redact(raw)}: {url.get_backend_name()} is not supported; dbrunbook runs on "
                          f"{' and '.join(SUPPORTED)}")
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    if url.password:
        remember_secret(str(url.password))
        remember_secret(unquote(str(url.password)))
    return url


def _is_local(url: sa.URL) -> bool:
    if url.get_backend_name() == "sqlite":
        return True
    return (url.host or "") in LOCAL_HOSTS


def embedded_target(name: str, database: str, production: bool) -> Target:
    """A database on the embedded server, by its name there."""
    # Resolving does not start the server: that happens on first connect (see engine()).
    socket_dir = embedded.pgdata_dir()
    url = sa.make_url(f"postgresql+psycopg://{embedded.SUPERUSER}@/{database}").update_query_dict(
        {"host": str(socket_dir)}
    )
    return Target(name=name, url=url, production=production, embedded_db=database)


def sqlite_dir() -> Path:
    """Where ``sqlite_file`` targets live: beside the embedded server's data folder."""
    folder = embedded.pgdata_dir().parent / "sqlite"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


GROUP_SEP = "/"  # a database of a pattern or query group: "<group>/<database>"


def member_target(ref: str, group: GroupConfig, database: str, root: Path | None = None) -> Target:
    """A database on the group's server, named ``<group>/<database>`` (what its ledger records and
    what ``status --target`` takes afterwards)."""
    server = resolve_target(group.server, root)
    if not server.dialect.sessions:  # its databases are found on a server
        raise TargetError(f"group {ref.split(GROUP_SEP)[0]}: its server {group.server} is not PostgreSQL")
    production = server.production if group.production is None else group.production
    return Target(name=ref, url=server.url.set(database=database), production=production,
                  embedded_db=database if server.embedded_db else None)


def resolve_target(ref: str, root: Path | None = None) -> Target:
    """Resolve a target reference: a configured name, ``env:VAR``, a default name, or a URL.

    A raw URL or ``env:`` reference to a server that is not on this machine counts as
    production: the guards err on the side of safety, and a named target is how one says
    otherwise.
    """
    ref = (ref or "").strip()
    if not ref:
        raise TargetError("no target given (a name such as dev or prod, env:VAR, or a URL)")
    if "://" in ref:
        url = parse_url(ref)
        return Target(name=url.render_as_string(hide_password=True), url=url, production=not _is_local(url))
    if ref.startswith(ENV_PREFIX):
        var = ref[len(ENV_PREFIX):]
        value = os.environ.get(var)
        if not value:
            raise TargetError(f"target {ref}: environment variable {var} is not set")
        url = parse_url(value)
        return Target(name=ref, url=url, production=not _is_local(url))
    config = load_config(root)
    group, _, database = ref.partition(GROUP_SEP)
    if database and group in config.groups and not config.groups[group].targets:
        return member_target(ref, config.groups[group], database, root)
    entry = config.targets.get(ref)
    if entry is not None:
        if entry.embedded:
            return embedded_target(ref, entry.embedded, entry.production)
        if entry.sqlite_file:
            return Target(name=ref, url=sa.make_url(f"sqlite:///{sqlite_dir() / entry.sqlite_file}.db"),
                          production=entry.production)
        if entry.url_env:
            value = os.environ.get(entry.url_env)
            if not value:
                raise TargetError(f"target {ref}: environment variable {entry.url_env} is not set")
        else:
            value = os.path.expandvars(entry.url or "")
        return Target(name=ref, url=parse_url(value), production=entry.production)
    override = os.environ.get(f"DBRUNBOOK_{ref.upper()}_URL")
    if override:
        url = parse_url(override)
        return Target(name=ref, url=url, production=ref == "prod" or not _is_local(url))
    if ref == "dev" and os.environ.get("DATABASE_URL"):
        return Target(name=ref, url=parse_url(os.environ["DATABASE_URL"]), production=False)
    if ref in DEFAULT_EMBEDDED:
        return embedded_target(ref, DEFAULT_EMBEDDED[ref], production=ref == "prod")
    known = sorted(set(config.targets) | set(DEFAULT_EMBEDDED))
    raise TargetError(f"unknown target {ref!r}; known targets: {', '.join(known)} (or env:VAR, or a URL)")




@contextmanager
def scratch_target(purpose: str) -> Iterator[Target]:
    """A throwaway database on the embedded server (created now, dropped afterwards, whatever
    happens): where ``import`` and ``new`` apply a migration to see what it makes."""
    database = f"dbrunbook_{purpose}_{uuid.uuid4().hex[:8]}"
    embedded.ensure_database(database)
    try:
        yield embedded_target(f"{purpose} scratch", database, production=False)
    finally:
        embedded.drop_database(database)
