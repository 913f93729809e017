"""Expectations: what must exist (or be gone) in the catalog after a phase, and the preconditions
that must return no rows before it: the ``expect`` sections of runbook.yaml, as strict models
(:mod:`.expect` checks them against a live schema)."""
from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from ..files import Strict

FK_ACTIONS = ("CASCADE", "SET NULL", "SET DEFAULT", "RESTRICT", "NO ACTION")


class ColumnExpect(Strict):
    """A column, its type and nullability (``present: false``: the column must not exist); its
    default expression, identity (``always``, ``by default``), generation expression and collation
    (where not its type's) as the server writes them, an empty string meaning it must have none."""

    table: str
    column: str
    type: str | None = None
    nullable: bool | None = None
    default: str | None = None
    identity: Literal["always", "by default", ""] | None = None
    generated: str | None = None
    collation: str | None = None
    present: bool = True


class IndexExpect(Strict):
    """An index by name; ``columns`` may carry ``DESC``; ``where`` is a partial predicate
    (an empty string means the index must not be partial); ``definition`` is all of it, as
    ``pg_get_indexdef`` writes it (order, NULLS, opclass, expressions, INCLUDE, predicate)."""

    table: str
    name: str
    columns: list[str] | None = None
    unique: bool | None = None
    where: str | None = None
    definition: str | None = None
    present: bool = True


class Reference(Strict):
    table: str
    columns: list[str]


class ForeignKeyExpect(Strict):
    table: str
    name: str | None = None
    columns: list[str]
    references: Reference | None = None
    on_delete: str | None = None
    on_update: str | None = None
    present: bool = True

    @field_validator("on_delete", "on_update")
    @classmethod
    def _action(cls, value: str | None) -> str | None:
        if value is None:
            return None
        norm = " ".join(value.replace("_", " ").upper().split())
        if norm not in FK_ACTIONS:
            raise ValueError(f"must be one of {', '.join(a.lower() for a in FK_ACTIONS)}")
        return norm


class CheckExpect(Strict):
    """A CHECK constraint by name; ``contains`` lists fragments its definition must hold."""

    table: str
    name: str
    contains: list[str] = []
    present: bool = True


class TriggerExpect(Strict):
    """A trigger by name on a table (seed 002's dual-write trigger, there and then gone), and its
    definition as ``pg_get_triggerdef`` writes it."""

    table: str
    name: str
    definition: str | None = None
    present: bool = True


class ConstraintExpect(Strict):
    """A constraint of any kind (primary key, unique, check, exclusion, foreign key) by name, and its
    definition as ``pg_get_constraintdef`` writes it."""

    table: str
    name: str
    definition: str | None = None
    present: bool = True


class EnumExpect(Strict):
    """An enum type and its labels, in their order."""

    name: str
    labels: list[str] | None = None
    present: bool = True


class ViewExpect(Strict):
    """A view (or materialized view) by name, and the hash of its definition
    (:func:`dbrunbook.catalog.definitions.digest`)."""

    name: str
    hash: str | None = None
    present: bool = True


class FunctionExpect(Strict):
    """A function or procedure as ``name(argument types)``, and the hash of its definition."""

    name: str
    hash: str | None = None
    present: bool = True


class TablesExpect(Strict):
    present: list[str] = []
    absent: list[str] = []


class Expectations(Strict):
    tables: TablesExpect = TablesExpect()
    columns: list[ColumnExpect] = []
    indexes: list[IndexExpect] = []
    foreign_keys: list[ForeignKeyExpect] = []
    checks: list[CheckExpect] = []
    triggers: list[TriggerExpect] = []
    constraints: list[ConstraintExpect] = []
    enums: list[EnumExpect] = []
    views: list[ViewExpect] = []
    functions: list[FunctionExpect] = []


class Precondition(Strict):
    """A query that must return no rows before the migration may run; the rows it returns are
    the offenders, listed when it fails."""

    name: str
    why: str = ""
    sql: str
