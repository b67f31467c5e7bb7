"""SQL identifiers that come from configuration: validated, then always quoted.

Schema and table names reach SQL from run config and resource config, so they are checked
against a strict pattern (no quotes, no spaces, no dots beyond `schema.table`) and composed with
`psycopg.sql.Identifier`, never with string formatting.
"""

from __future__ import annotations

import re

from psycopg import sql

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")  # whole value: see validate_identifier


def validate_identifier(name: str, what: str = "identifier") -> str:
    """Return `name` if it is a plain SQL identifier, else raise naming `what` was wrong.

    The whole value must match (`fullmatch`): with `re.match` and `$`, `"tp\\n"` would pass.
    """
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"invalid {what} {name!r}: use 1-63 letters, digits and underscores, "
            "not starting with a digit"
        )
    return name


def split_table_name(name: str, default_schema: str = "public") -> tuple[str, str]:
    """(schema, table) of a validated `table` or `schema.table` name from config."""
    parts = name.split(".") if isinstance(name, str) else [name]
    if len(parts) == 1:
        parts = [default_schema, parts[0]]
    if len(parts) != 2:
        raise ValueError(f"invalid table name {name!r}: expected 'table' or 'schema.table'")
    schema, table = parts
    return validate_identifier(schema, "schema name"), validate_identifier(table, "table name")


def qualified_table(name: str, default_schema: str = "public") -> sql.Identifier:
    """`table` or `schema.table` from config as a quoted, validated SQL identifier."""
    return sql.Identifier(*split_table_name(name, default_schema))
