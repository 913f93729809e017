"""Who and when: the operator a record names, the time it carries, and the id of one run."""
from __future__ import annotations

import getpass
import os
import socket
import uuid
from datetime import UTC, datetime


def new_run_id() -> str:
    """The id of one run (the ledger's events and the archive's folder share it)."""
    return uuid.uuid4().hex[:12]


def operator() -> str:
    """Who runs this: $DBRUNBOOK_OPERATOR, else user@host."""
    env = os.environ.get("DBRUNBOOK_OPERATOR")
    if env:
        return env
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def now() -> datetime:
    return datetime.now(UTC)
