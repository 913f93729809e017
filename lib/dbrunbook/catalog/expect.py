"""Declarative expectations checked against a live schema, as a pass/fail frame.

SQLAlchemy's Inspector does the looking (it works the same on PostgreSQL and SQLite); the
comparison rules (type aliases, predicate normalisation) live here.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..dialects import Dialect
from ..errors import PreconditionFailed
from ..sql.statements import Statement, parse_one
from . import definitions
from .expectations import (
    CheckExpect,
    ColumnExpect,
    ConstraintExpect,
    EnumExpect,
    Expectations,
    ForeignKeyExpect,
    IndexExpect,
    Precondition,
    TriggerExpect,
)

#: A trigger's definition by name and table (a schema where the dialect has them).
_TRIGGER_QUERY = {
    Dialect.POSTGRESQL: "SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal AND t.tgname = :name "
                        "AND c.relname = :table AND n.nspname = coalesce(:schema, current_schema())",
    Dialect.SQLITE: "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = :name AND tbl_name = :table",
}
PASS = "pass"
FAIL = "FAIL"
COLUMNS = ["check", "object", "expected", "actual", "result"]

_TYPE_ALIASES = {
    "int": "integer", "int4": "integer", "serial": "integer", "serial4": "integer",
    "int8": "bigint", "bigserial": "bigint", "serial8": "bigint", "int2": "smallint",
    "bool": "boolean", "float8": "double precision", "float4": "real",
    "timestamptz": "timestamp with time zone", "timestamp": "timestamp without time zone",
    "timetz": "time with time zone", "time": "time without time zone",
    "varchar": "character varying", "char": "character", "bpchar": "character",
    "decimal": "numeric",
}


def normalize_type(name: str) -> str:
    """Canonical spelling of a SQL type, so ``VARCHAR(50)`` equals ``character varying(50)``."""
    text = " ".join(name.lower().replace('"', "").split())
    text = re.sub(r"\s*\(\s*", "(", text)
    text = re.sub(r"\s*,\s*", ",", text)
    text = re.sub(r"\s*\)", ")", text)
    match = re.fullmatch(r"([a-z][a-z0-9 ]*?)(\([0-9,]*\))?((?:\[\])*)", text)
    if not match:
        return text
    base, args, arrays = match.group(1), match.group(2) or "", match.group(3)
    if base in ("timestamp", "time") and args:
        base += " without time zone"
    base = _TYPE_ALIASES.get(base, base)
    if args and base.endswith("time zone"):
        # PostgreSQL writes the precision after the first word: timestamp(3) with time zone.
        word, rest = base.split(" ", 1)
        return f"{word}{args} {rest}{arrays}"
    return base + args + arrays


def normalize_predicate(text: str, dialect: str) -> str:
    """A partial-index predicate in canonical form (PostgreSQL: deparsed by pglast)."""
    text = text.strip()
    if Dialect(dialect).parser and text:
        try:
            from pglast.stream import RawStream

            select: Any = parse_one(f"SELECT 1 WHERE {text}")
            node = select.whereClause
            return RawStream()(node).lower()
        except Exception:
            pass  # fall back to the plain normalisation below
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    return " ".join(text.replace('"', "").lower().split())


@dataclass(frozen=True)
class _Table:
    schema: str | None
    name: str

    @classmethod
    def parse(cls, ref: str, dialect: str) -> _Table:
        if "." in ref and Dialect(dialect).schemas:
            schema, name = ref.split(".", 1)
            return cls(schema, name)
        return cls(None, ref)


def _row(check: str, obj: str, expected: str, actual: str, ok: bool) -> dict[str, str]:
    return {"check": check, "object": obj, "expected": expected, "actual": actual,
            "result": PASS if ok else FAIL}


class _Checker:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        self.inspector = sa.inspect(conn)

    def table(self, ref: str) -> _Table | None:
        table = _Table.parse(ref, self.dialect)
        return table if self.inspector.has_table(table.name, schema=table.schema) else None

    def find(self, ref: str, reflect: str, match: Callable[[Any], bool]) -> tuple[_Table | None, Any]:
        """The table (None if missing) and the first reflected item on it that matches."""
        table = self.table(ref)
        if table is None:
            return None, None
        items = getattr(self.inspector, reflect)(table.name, schema=table.schema)
        return table, next((item for item in items if match(item)), None)

    def tables(self, present: list[str], absent: list[str]) -> list[dict[str, str]]:
        rows = [_row("table", ref, "exists", "exists" if self.table(ref) else "missing",
                     self.table(ref) is not None) for ref in present]
        rows += [_row("table", ref, "absent", "exists" if self.table(ref) else "absent",
                      self.table(ref) is None) for ref in absent]
        return rows

    def column(self, exp: ColumnExpect) -> dict[str, str]:
        obj = f"{exp.table}.{exp.column}"
        table, found = self.find(exp.table, "get_columns", lambda c: c["name"] == exp.column)
        wanted = ["exists"]
        if exp.type is not None:
            wanted.append(normalize_type(exp.type))
        if exp.nullable is not None:
            wanted.append("NULL" if exp.nullable else "NOT NULL")
        decided = _presence("column", obj, table, found, exp.present, " ".join(wanted))
        if decided:
            return decided
        assert table is not None  # found on it
        # The collation is a check of its own (``collation``), not part of the type's name.
        actual_type = re.sub(r"\s+collate\s+\S+$", "", normalize_type(str(found["type"].compile(
            dialect=self.conn.dialect))))
        got = ["exists"]
        ok = True
        if exp.type is not None:
            got.append(actual_type)
            ok &= actual_type == normalize_type(exp.type)
        if exp.nullable is not None:
            got.append("NULL" if found["nullable"] else "NOT NULL")
            ok &= bool(found["nullable"]) == exp.nullable
        details = self._column_details(table, exp.column, found) if \
            (exp.default, exp.identity, exp.generated, exp.collation) != (None, None, None, None) else {}
        for key, label in (("default", "default"), ("identity", "identity"), ("generated", "generated always as"),
                           ("collation", "collate")):
            value = getattr(exp, key)
            if value is None:
                continue
            actual = details[key]
            wanted.append(f"{label} {value}" if value else f"no {key}")
            got.append(f"{label} {actual}" if actual else f"no {key}")
            ok &= " ".join(actual.split()) == " ".join(value.split())
        return _row("column", obj, " ".join(wanted), " ".join(got), ok)

    def _column_details(self, table: _Table, column: str, found: Mapping[str, Any]) -> dict[str, str]:
        """A column's default, identity and generation expression as the server writes them."""
        if self.dialect == Dialect.POSTGRESQL:
            return definitions.columns(self.raw, table.schema or self.schema, table.name)[column]
        computed = found.get("computed") or {}
        return {"default": str(found.get("default") or ""), "identity": "",
                "generated": str(computed.get("sqltext") or ""),
                "collation": str(getattr(found["type"], "collation", None) or "")}

    @property
    def raw(self) -> Any:
        """The DB-API connection under the checks' own: same session, same transaction."""
        return self.conn.connection.driver_connection

    @property
    def schema(self) -> str:
        return str(self.conn.execute(sa.text("SELECT current_schema()")).scalar())

    def _postgresql_only(self, check: str, obj: str) -> dict[str, str] | None:
        if self.dialect == Dialect.POSTGRESQL:
            return None
        return _row(check, obj, "checked", f"not readable on {self.dialect}: {check}s are PostgreSQL's", False)

    def index(self, exp: IndexExpect) -> dict[str, str]:
        obj = f"{exp.table}: {exp.name}"
        table, found = self.find(exp.table, "get_indexes", lambda i: i["name"] == exp.name)
        decided = _presence("index", obj, table, found, exp.present)
        if decided:
            return decided
        assert table is not None  # found on it
        wanted, got, ok = ["exists"], ["exists"], True
        if exp.columns is not None:
            actual_cols = _index_columns(found)
            wanted.append(f"on ({', '.join(exp.columns)})")
            got.append(f"on ({', '.join(actual_cols)})")
            ok &= [_norm_col(c) for c in exp.columns] == [_norm_col(c) for c in actual_cols]
        if exp.unique is not None:
            wanted.append("unique" if exp.unique else "not unique")
            got.append("unique" if found["unique"] else "not unique")
            ok &= bool(found["unique"]) == exp.unique
        if exp.where is not None:
            options = found.get("dialect_options", {})
            actual_where = options.get("postgresql_where") or options.get("sqlite_where") or ""
            wanted.append(f"where {exp.where}" if exp.where else "not partial")
            got.append(f"where {actual_where}" if actual_where else "not partial")
            ok &= (normalize_predicate(str(actual_where), self.dialect)
                   == normalize_predicate(exp.where, self.dialect))
        if exp.definition is not None:
            actual_definition = self._index_definition(table, exp.name)
            wanted.append(f"as {definitions.canonical(exp.definition)}")
            got.append(f"as {actual_definition}")
            ok &= actual_definition == definitions.canonical(exp.definition)
        return _row("index", obj, " ".join(wanted), " ".join(got), ok)

    def _index_definition(self, table: _Table, name: str) -> str:
        if self.dialect == Dialect.POSTGRESQL:
            return definitions.index_definition(self.raw, table.schema or self.schema, name)
        row = self.conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :n"),
                                {"n": name}).first()
        return definitions.canonical(str(row[0] if row else ""))

    def foreign_key(self, exp: ForeignKeyExpect) -> dict[str, str]:
        label = exp.name or f"({', '.join(exp.columns)})"
        obj = f"{exp.table}: {label}"
        table, found = self.find(
            exp.table, "get_foreign_keys",
            lambda fk: fk["name"] == exp.name if exp.name else fk["constrained_columns"] == exp.columns)
        decided = _presence("foreign key", obj, table, found, exp.present)
        if decided:
            return decided
        wanted = [f"({', '.join(exp.columns)})"]
        got = [f"({', '.join(found['constrained_columns'])})"]
        ok = found["constrained_columns"] == exp.columns
        if exp.references is not None:
            ref_table = _Table.parse(exp.references.table, self.dialect)
            wanted.append(f"-> {exp.references.table}({', '.join(exp.references.columns)})")
            got.append(f"-> {found['referred_table']}({', '.join(found['referred_columns'])})")
            ok &= found["referred_table"] == ref_table.name and found["referred_columns"] == exp.references.columns
            if ref_table.schema is not None:
                ok &= (found.get("referred_schema") or "public") == ref_table.schema
        options = found.get("options", {})
        actions = (("ON DELETE", exp.on_delete, "ondelete"), ("ON UPDATE", exp.on_update, "onupdate"))
        for clause, wanted_action, key in actions:
            if wanted_action is not None:
                actual = (options.get(key) or "NO ACTION").upper()
                wanted.append(f"{clause} {wanted_action}")
                got.append(f"{clause} {actual}")
                ok &= actual == wanted_action
        return _row("foreign key", obj, " ".join(wanted), " ".join(got), ok)

    def check(self, exp: CheckExpect) -> dict[str, str]:
        obj = f"{exp.table}: {exp.name}"
        table, found = self.find(exp.table, "get_check_constraints", lambda c: c["name"] == exp.name)
        decided = _presence("check", obj, table, found, exp.present)
        if decided:
            return decided
        text = str(found.get("sqltext", ""))
        missing = [frag for frag in exp.contains if frag not in text]
        wanted = "exists" + (f" containing {', '.join(exp.contains)}" if exp.contains else "")
        return _row("check", obj, wanted, text, not missing)

    def trigger(self, exp: TriggerExpect) -> dict[str, str]:
        obj = f"{exp.table}: {exp.name}"
        table = self.table(exp.table)
        found = None
        if table is not None:
            found = self._trigger_definition(table, exp.name)
        decided = _presence("trigger", obj, table, found, exp.present)
        if decided:
            return decided
        if exp.definition is None:
            return _row("trigger", obj, "exists", "exists", True)
        wanted, actual = definitions.canonical(exp.definition), definitions.canonical(str(found))
        return _row("trigger", obj, f"as {wanted}", f"as {actual}", wanted == actual)

    def constraint(self, exp: ConstraintExpect) -> dict[str, str]:
        obj = f"{exp.table}: {exp.name}"
        refused = self._postgresql_only("constraint", obj)
        if refused:
            return refused
        table = self.table(exp.table)
        found = definitions.constraints(self.raw, table.schema or self.schema, table.name).get(exp.name) \
            if table is not None else None
        decided = _presence("constraint", obj, table, found, exp.present)
        if decided:
            return decided
        if exp.definition is None:
            return _row("constraint", obj, "exists", "exists", True)
        wanted = " ".join(exp.definition.split())
        return _row("constraint", obj, wanted, str(found), wanted == found)

    def enum(self, exp: EnumExpect) -> dict[str, str]:
        refused = self._postgresql_only("enum", exp.name)
        if refused:
            return refused
        labels = definitions.enums(self.raw).get(self._qualified(exp.name))
        if not exp.present or labels is None:
            return _row("enum", exp.name, "absent" if not exp.present else "exists",
                        "absent" if labels is None else "exists", (labels is None) != exp.present)
        if exp.labels is None:
            return _row("enum", exp.name, "exists", "exists", True)
        return _row("enum", exp.name, f"labels {', '.join(exp.labels)}", f"labels {', '.join(labels)}",
                    labels == exp.labels)

    def hashed(self, kind: str, name: str, wanted: str | None, present: bool,
               read: Callable[[Any], dict[str, str]]) -> dict[str, str]:
        """A view or a function: there or not, and its definition's hash."""
        refused = self._postgresql_only(kind, name)
        if refused:
            return refused
        found = read(self.raw).get(self._qualified(name))
        if not present or found is None:
            return _row(kind, name, "absent" if not present else "exists", "absent" if found is None else "exists",
                        (found is None) != present)
        if wanted is None:
            return _row(kind, name, "exists", "exists", True)
        return _row(kind, name, f"definition hash {wanted}", f"definition hash {found}", found == wanted)

    def _qualified(self, name: str) -> str:
        """An expectation's name as :mod:`.definitions` names objects (bare in public)."""
        return name[len("public."):] if name.startswith("public.") else name

    def _trigger_definition(self, table: _Table, name: str) -> str | None:
        # SQLAlchemy's inspector does not reflect triggers: one catalog query per dialect.
        query = _TRIGGER_QUERY[Dialect(self.dialect)]
        row = self.conn.execute(sa.text(query), {"name": name, "table": table.name, "schema": table.schema}).first()
        return None if row is None else str(row[0])


def _presence(check: str, obj: str, table: _Table | None, found: object, present: bool,
              expected: str = "exists") -> dict[str, str] | None:
    """The row when presence alone decides (absence wanted, or nothing found); else None."""
    if not present:
        return _row(check, obj, "absent", "exists" if found is not None else "absent", found is None)
    if found is None:
        return _row(check, obj, expected, "missing" if table else "table missing", False)
    return None


def _index_columns(found: Mapping[str, Any]) -> list[str]:
    names = list(found.get("column_names") or [])
    expressions = found.get("expressions") or []
    sorting = found.get("column_sorting") or {}
    cols = []
    for position, name in enumerate(names):
        label = name if name is not None else (expressions[position] if position < len(expressions) else "?")
        flags = sorting.get(label, ())
        cols.append(" ".join([label, *[f.upper().replace("_", " ") for f in flags]]))
    return cols


def _norm_col(text: str) -> str:
    norm = " ".join(text.replace('"', "").split())
    return re.sub(r"\s+ASC$", "", norm, flags=re.I).lower()


def check_expectations(conn: Connection, expectations: Expectations) -> pd.DataFrame:
    """Check every expectation against the schema ``conn`` sees; one row each."""
    checker = _Checker(conn)
    rows = checker.tables(expectations.tables.present, expectations.tables.absent)
    rows += [checker.column(c) for c in expectations.columns]
    rows += [checker.index(i) for i in expectations.indexes]
    rows += [checker.foreign_key(f) for f in expectations.foreign_keys]
    rows += [checker.check(c) for c in expectations.checks]
    rows += [checker.trigger(t) for t in expectations.triggers]
    rows += [checker.constraint(c) for c in expectations.constraints]
    rows += [checker.enum(e) for e in expectations.enums]
    rows += [checker.hashed("view", v.name, v.hash, v.present, definitions.views) for v in expectations.views]
    rows += [checker.hashed("function", f.name, f.hash, f.present, definitions.functions)
             for f in expectations.functions]
    return pd.DataFrame(rows, columns=COLUMNS)


def check_verify_scripts(conn: Connection, statements: list[Statement]) -> pd.DataFrame:
    """Run each statement of the verify scripts in a savepoint rolled back (a verify script proves,
    it never changes); one row each, failed when it raises."""
    rows = []
    for stmt in statements:
        where = f"{stmt.file}:{stmt.line}"
        savepoint = conn.begin_nested()
        try:
            conn.exec_driver_sql(stmt.text)
            actual, ok = "ran", True
        except sa.exc.DBAPIError as exc:
            actual, ok = " ".join(str(exc.orig or exc).split())[:200], False
        finally:
            savepoint.rollback()
        rows.append(_row("verify script", where, f"runs without error: {stmt.summary[:80]}", actual, ok))
    return pd.DataFrame(rows, columns=COLUMNS)


def failures(frame: pd.DataFrame) -> list[str]:
    """One line per failed row of a check frame."""
    bad = frame[frame["result"] == FAIL]
    return [f"{r.check} {r.object}: expected {r.expected}, found {r.actual}" for r in bad.itertuples()]


# -- preconditions: what must hold before the migration may run -------------------------------------

@dataclass(frozen=True)
class PreconditionResult:
    precondition: Precondition
    offenders: pd.DataFrame

    @property
    def ok(self) -> bool:
        return self.offenders.empty


def check_preconditions(conn: Connection, preconditions: list[Precondition]) -> list[PreconditionResult]:
    """Run each precondition query; the rows it returns are the offenders."""
    results = []
    for item in preconditions:
        # The raw DB-API cursor: no parameter parsing, so '%' or ':' in the SQL stay as written.
        cursor = conn.connection.cursor()
        cursor.execute(item.sql)
        columns = [d[0] for d in cursor.description or []]
        results.append(PreconditionResult(item, pd.DataFrame(cursor.fetchall(), columns=columns)))
        cursor.close()
    return results


def preconditions_frame(results: list[PreconditionResult]) -> pd.DataFrame:
    return pd.DataFrame([{"precondition": r.precondition.name, "offending rows": len(r.offenders),
                          "result": PASS if r.ok else FAIL} for r in results],
                        columns=["precondition", "offending rows", "result"])


def raise_for_preconditions(results: list[PreconditionResult]) -> None:
    """Raise :class:`PreconditionFailed` for the first precondition with offenders."""
    for result in results:
        if not result.ok:
            sample = "; ".join(", ".join(f"{k}={v}" for k, v in row.items())
                               for row in result.offenders.head(5).to_dict("records"))
            more = len(result.offenders) - 5
            raise PreconditionFailed(result.precondition.name, len(result.offenders),
                                     sample + (f"; and {more} more" if more > 0 else ""))
