"""Reading the project's files: YAML documents as plain data, the strict model every one of them
is validated by (an unknown key or a wrong type is an error naming the field, so a typo never
silently turns a check off), and a file's sha256."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

# libyaml's parser where PyYAML has it (its wheels do): the same documents, about 7 times faster
# than the pure-Python parser on a runbook.yaml, which every CLI and kernel process reads.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def read_yaml(text: str) -> Any:
    """A YAML document as plain data (safe loading: no Python objects)."""
    return yaml.load(text, Loader=_YAML_LOADER)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def folder_files(folder: Path) -> list[Path]:
    """Every file under ``folder``, in name order (bytecode caches left out)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def file_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by its path inside it: what a runbook's (or a set's)
    files are, for the manifest of each run and for an approval, which must agree on it."""
    return {str(p.relative_to(folder)): sha256_file(p) for p in folder_files(folder)}


def digest(pairs: Iterable[tuple[str, str]]) -> str:
    """One sha256 over (name, digest) pairs, in the order given: renaming, reordering or editing
    any one of them shows."""
    return hashlib.sha256("".join(f"{name}:{value}\n" for name, value in pairs).encode()).hexdigest()
