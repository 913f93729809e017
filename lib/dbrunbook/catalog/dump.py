"""``pg_dump --schema-only`` of a target: the schema as PostgreSQL itself writes it out."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..errors import TargetError
from ..targets import embedded
from ..targets.connect import engine
from ..targets.resolve import Target
from ..targets.secrets import redact


def dump_schema(target: Target, path: Path, *, exclude_schemas: tuple[str, ...] = ()) -> Path:
    """``pg_dump --schema-only`` of the target into ``path`` (without ``exclude_schemas``); the
    password travels in PGPASSWORD."""
    url = engine(target).url
    env = {**os.environ}
    args = [str(embedded.client_binary("pg_dump")), "--schema-only", "--no-owner", "--no-privileges",
            *(f"--exclude-schema={schema}" for schema in exclude_schemas), "--file", str(path)]
    host = url.query.get("host") or url.host
    if host:
        args += ["--host", str(host)]
    if url.port:
        args += ["--port", str(url.port)]
    if url.username:
        args += ["--username", url.username]
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    args += ["--dbname", str(url.database)]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        raise TargetError(f"pg_dump --schema-only of {target.name} failed: {redact(done.stderr.strip())}")
    return path
