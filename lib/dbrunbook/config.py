"""The project file, ``dbrunbook.yaml``: its targets, groups and approval policy, validated.

Strict like runbook.yaml: an unknown key or a wrong type is one :class:`SpecError` naming the
file and the field. ``$DBRUNBOOK_TARGETS`` (JSON) adds targets without writing a file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from .errors import SpecError
from .files import read_yaml
from .paths import project_root

CONFIG_NAME = "dbrunbook.yaml"


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
