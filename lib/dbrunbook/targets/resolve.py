"""Targets: a name (``dev``, ``prod``, ...), ``env:VAR`` or a raw URL, resolved to a database.

Only the *reference* ever reaches a notebook parameter, an output or a log; the resolved URL,
which may carry a password, stays inside this module's :class:`Target` and is shown redacted.
Every password met while resolving is remembered so that :func:`redact` can scrub it from any
text that leaves the process (error messages, archives).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import sqlalchemy as sa
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from ..errors import SpecError, TargetError
from ..paths import project_root
from ..runbook.spec import read_yaml
from . import embedded

CONFIG_NAME = "dbrunbook.yaml"
ENV_PREFIX = "env:"
DEFAULT_EMBEDDED = {"dev": "app_dev", "prod": "app_prod"}
LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1"}
SUPPORTED = ("postgresql", "sqlite")

_SECRETS: set[str] = set()


class TargetConfig(BaseModel):
    """One entry under ``targets:`` in dbrunbook.yaml."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    url_env: str | None = None
    embedded: str | None = None
    # A SQLite file beside the embedded server's data (the project's local state): <name>.db.
    sqlite_file: str | None = None
    production: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _one_source(self) -> TargetConfig:
        given = [k for k in ("url", "url_env", "embedded", "sqlite_file") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of url, url_env, embedded, sqlite_file")
        return self


class ApprovalsConfig(BaseModel):
    """Who may approve a production deploy: by default never the operator who deploys (four eyes)."""

    model_config = ConfigDict(extra="forbid")

    required: bool = True
    allow_self_approval: bool = False


class GroupConfig(BaseModel):
    """A group of targets for a fleet run: an explicit list of target names, the databases of a
    server whose names match ``pattern`` (``tenant_*``), or the rows of ``query`` run on the
    catalog target ``on`` (each a database name on ``server``, a target name or ``env:VAR``:
    references, never URLs with secrets; Atlas's ``for_each`` over a query is the model)."""

    model_config = ConfigDict(extra="forbid")

    targets: list[str] = []
    pattern: str | None = None
    query: str | None = None
    on: str | None = None
    server: str = "dev"           # the target whose server holds the databases
    production: bool | None = None  # default: the server target's flag

    @model_validator(mode="after")
    def _one_kind(self) -> GroupConfig:
        given = [k for k in ("targets", "pattern", "query") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of targets, pattern, query")
        if self.query and not self.on:
            raise ValueError("a query group names the target it runs on (on: ...)")
        return self


class ProjectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: dict[str, TargetConfig] = {}
    approvals: ApprovalsConfig = ApprovalsConfig()
    groups: dict[str, GroupConfig] = {}


@dataclass(frozen=True)
class Target:
    """A resolved target. ``name`` is safe to show; ``url`` is not."""

    name: str
    url: sa.URL = field(repr=False)
    production: bool
    embedded_db: str | None = None

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @property
    def display_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def __str__(self) -> str:
        return self.name


def config_path(root: Path | None = None) -> Path:
    env = os.environ.get("DBRUNBOOK_CONFIG")
    return Path(env) if env else (root or project_root()) / CONFIG_NAME


TARGETS_ENV = "DBRUNBOOK_TARGETS"


def load_config(root: Path | None = None) -> ProjectConfig:
    """dbrunbook.yaml, plus targets given as JSON in $DBRUNBOOK_TARGETS (they win on a clash):
    how a CI job, or ``dbrunbook demo --all``, defines targets without writing a file."""
    path = config_path(root)
    raw: dict[str, Any] = {}
    if path.is_file():
        try:
            raw = read_yaml(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SpecError(path, f"not valid YAML: {exc}") from None
    extra = os.environ.get(TARGETS_ENV)
    if extra:
        try:
            raw = {**raw, "targets": {**(raw.get("targets") or {}), **json.loads(extra)}}
        except (json.JSONDecodeError, AttributeError, TypeError):
            raise SpecError(TARGETS_ENV, "must be a JSON object of target name -> entry") from None
    try:
        return ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise SpecError(path, err["msg"], ".".join(str(p) for p in err["loc"])) from None


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


def _embedded_target(name: str, database: str, production: bool) -> Target:
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
    if server.dialect != "postgresql":
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
            return _embedded_target(ref, entry.embedded, entry.production)
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
        return _embedded_target(ref, DEFAULT_EMBEDDED[ref], production=ref == "prod")
    known = sorted(set(config.targets) | set(DEFAULT_EMBEDDED))
    raise TargetError(f"unknown target {ref!r}; known targets: {', '.join(known)} (or env:VAR, or a URL)")


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


def engine(target: Target, *, create: bool = True) -> Engine:
    """An engine for the target, starting the embedded server on demand; ``create=False`` for a
    reader (history, verify, the overview): a dropped embedded database stays dropped."""
    url = target.url
    if not create and target.dialect == "sqlite" and url.database and url.database != ":memory:" \
            and not Path(url.database).exists():
        raise TargetError(f"SQLite file {url.database} does not exist")  # connecting would create it
    if target.embedded_db:
        # The wheel may put the socket elsewhere when the data path is too long for one.
        socket_dir = embedded.ensure_database(target.embedded_db, create=create)
        url = url.update_query_dict({"host": str(socket_dir)})
    return _engine(url)


@lru_cache(maxsize=32)
def _engine(url: sa.URL) -> Engine:
    # NullPool: phases hold one connection for their whole life, and idle pooled connections
    # would only block DROP DATABASE and lock waits for nothing.
    kwargs: dict[str, Any] = {"poolclass": NullPool}
    if url.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"application_name": "dbrunbook"}
    eng = sa.create_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        _transactional_sqlite(eng)
    else:
        event.listen(eng, "connect", lambda dbapi_connection, _record: _watch_and_commit(dbapi_connection))
    shown = url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)

    @event.listens_for(eng, "handle_error")
    def _unreachable(ctx: Any) -> None:
        # A failed connect (closed port, wrong password, no such database) is the user's to fix:
        # one line naming the server, not a driver traceback.
        if ctx.connection is None and isinstance(ctx.sqlalchemy_exception, sa.exc.OperationalError):
            raise TargetError(f"cannot connect to {shown}: {_first_line(ctx.original_exception)}") from None

    return eng


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return redact(lines[0] if lines else type(exc).__name__)


def _watch_and_commit(dbapi_connection: Any) -> None:
    watch_client(dbapi_connection)
    if not dbapi_connection.autocommit:
        dbapi_connection.commit()


def _transactional_sqlite(eng: Engine) -> None:
    """Python's sqlite3 commits before DDL on its own; SQLite itself runs DDL in transactions.
    Take the transaction out of the driver's hands and emit BEGIN ourselves (SQLAlchemy's
    documented recipe), so a migration and its checks commit or roll back together."""

    @event.listens_for(eng, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA foreign_keys = ON")
        dbapi_connection.execute("PRAGMA busy_timeout = 5000")

    @event.listens_for(eng, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")


def psycopg_connect(target: Target, application_name: str, autocommit: bool = True) -> Any:
    """A psycopg connection of its own (PostgreSQL targets), named so that ``pg_stat_activity``
    says whose it is; in autocommit unless asked (then it never holds a transaction open)."""
    import psycopg

    url = engine(target).url.set(drivername="postgresql")
    try:
        conn = psycopg.connect(url.render_as_string(hide_password=False), autocommit=autocommit,
                               application_name=application_name[:63])
    except psycopg.OperationalError as exc:
        raise TargetError(f"cannot connect to {target.display_url}: {_first_line(exc)}") from None
    watch_client(conn)
    if not autocommit:
        conn.commit()
    return conn


def watch_client(conn: Any) -> None:
    """Have the server check, during a long statement, that this client is still there (PostgreSQL
    14+): a killed run's statement is cancelled within a second and its locks released, instead of
    running on (a ``pg_sleep``, an index build) with nobody to commit it. Older servers: unchanged."""
    import psycopg

    try:
        conn.execute("SET client_connection_check_interval = 1000")
    except psycopg.Error:
        conn.rollback()
