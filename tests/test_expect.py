"""Expectations against a real PostgreSQL: every kind passes when true and fails when not."""
from __future__ import annotations

import sqlalchemy as sa
from dbrunbook.catalog.expect import (
    check_expectations,
    failures,
    normalize_predicate,
    normalize_type,
)
from dbrunbook.catalog.expectations import Expectations

from .conftest import connect

SCHEMA = """
CREATE TABLE "Customer" (id uuid PRIMARY KEY, code varchar(50) NOT NULL);
CREATE TABLE "Conversation" (
  id serial PRIMARY KEY,
  lead_id text NOT NULL,
  customer_id uuid REFERENCES "Customer"(id) ON DELETE SET NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  closed_at timestamptz,
  scope varchar(10) CONSTRAINT conv_scope_check CHECK (scope IN ('form', 'schema', 'semantic'))
);
CREATE UNIQUE INDEX "Conversation_lead_open_unique" ON "Conversation"(lead_id) WHERE closed_at IS NULL;
CREATE INDEX "Conversation_customer_id_started_at_idx" ON "Conversation"(customer_id, started_at DESC);
"""


def expectations(**sections: object) -> Expectations:
    return Expectations.model_validate(sections)


def run_checks(target: str, exp: Expectations):
    with connect(target) as conn:
        with conn.begin():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(sa.text(statement))
        return check_expectations(conn, exp)


def test_true_expectations_all_pass(target: str) -> None:
    frame = run_checks(target, expectations(
        tables={"present": ["Conversation", "public.Customer"], "absent": ["Nope"]},
        columns=[{"table": "Conversation", "column": "closed_at", "type": "timestamptz", "nullable": True},
                 {"table": "Customer", "column": "code", "type": "VARCHAR(50)", "nullable": False},
                 {"table": "Conversation", "column": "gone", "present": False}],
        indexes=[{"table": "Conversation", "name": "Conversation_lead_open_unique", "columns": ["lead_id"],
                  "unique": True, "where": "closed_at is null"},
                 {"table": "Conversation", "name": "Conversation_customer_id_started_at_idx",
                  "columns": ["customer_id", "started_at DESC"], "unique": False, "where": ""}],
        foreign_keys=[{"table": "Conversation", "columns": ["customer_id"],
                       "references": {"table": "Customer", "columns": ["id"]}, "on_delete": "set null"}],
        checks=[{"table": "Conversation", "name": "conv_scope_check", "contains": ["'semantic'"]}],
    ))
    assert failures(frame) == []
    assert len(frame) == 10


def test_each_false_expectation_fails_with_what_was_found(target: str) -> None:
    frame = run_checks(target, expectations(
        tables={"present": ["Missing"], "absent": ["Customer"]},
        columns=[{"table": "Conversation", "column": "closed_at", "type": "text"},
                 {"table": "Conversation", "column": "lead_id", "nullable": True},
                 {"table": "Conversation", "column": "lead_id", "present": False}],
        indexes=[{"table": "Conversation", "name": "Conversation_lead_open_unique", "where": "closed_at IS NOT NULL"},
                 {"table": "Conversation", "name": "Conversation_lead_open_unique", "unique": False},
                 {"table": "Conversation", "name": "Conversation_customer_id_started_at_idx",
                  "columns": ["customer_id", "started_at"]},
                 {"table": "Conversation", "name": "no_such_idx"}],
        foreign_keys=[{"table": "Conversation", "columns": ["customer_id"], "on_delete": "cascade"},
                      {"table": "Conversation", "columns": ["customer_id"], "present": False}],
        checks=[{"table": "Conversation", "name": "conv_scope_check", "contains": ["'report'"]},
                {"table": "Customer", "name": "nope_check"}],
    ))
    assert (frame["result"] == "FAIL").all(), frame.to_string()
    lines = failures(frame)
    assert len(lines) == len(frame) == 13
    assert "found exists timestamp with time zone" in lines[2]
    assert any("ON DELETE SET NULL" in line for line in lines)


def test_type_and_predicate_normalisation() -> None:
    assert normalize_type("VARCHAR(50)") == normalize_type("character varying(50)")
    assert normalize_type("timestamptz") == "timestamp with time zone"
    assert normalize_type("TIMESTAMP(3)") == "timestamp(3) without time zone"
    assert normalize_type("int") == normalize_type("INTEGER") == "integer"
    assert normalize_type("TEXT[]") == "text[]"
    assert normalize_predicate("(closed_at IS NULL)", "postgresql") == normalize_predicate("closed_at is null", "postgresql")
    assert normalize_predicate("a = 1", "postgresql") != normalize_predicate("a = 2", "postgresql")
