"""The warehouse connection as the ledger uses it, one class per engine.

The ledger writes its SQL once, with `?` placeholders and portable
expressions; an engine runs it on its connection and supplies the few
fragments that differ (JSON aggregation, table locking). Engines with
transactions (DuckDB, PostgreSQL) get transactional writes. Spark (and
Databricks) has none on plain tables and no row deletes: its state tables
are append-only event logs behind views (created by the package's
`spark__create_state_tables`), so every write is an idempotent append.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

PLACEHOLDER = re.compile(r"\?")


class Engine:
    """A warehouse connection for the ledger."""

    adapter_type = "default"
    #: Writes are transactional; False: state tables are append-only event logs.
    transactional = True
    #: Batches per page of the plan read into memory (1000 identifiers each at most).
    page_batches = 50

    def __init__(self, connection: Any, *, owns_connection: bool = True) -> None:
        self.connection = connection
        self.owns_connection = owns_connection

    def query(self, sql: str, params: list[Any] | tuple = ()) -> list[tuple]:
        raise NotImplementedError

    def execute(self, sql: str, params: list[Any] | tuple = ()) -> int:
        """Run a statement; the number of rows it changed (-1 when the engine does not say)."""
        raise NotImplementedError

    @contextmanager
    def transaction(self):
        self.execute("begin transaction")
        try:
            yield
        except BaseException:
            self.execute("rollback")
            raise
        self.execute("commit")

    def insert_rows(self, relation: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        """Insert `rows` (tuples in `columns` order) with one statement of bound values."""
        values = ", ".join("(" + ", ".join("?" for _ in columns) + ")" for _ in rows)
        self.execute(f"insert into {relation} ({', '.join(columns)}) values {values}",
                     [value for row in rows for value in row])

    def concurrent(self) -> Engine | None:
        """An engine on a connection of its own to the same warehouse, for another
        thread (its transactions independent of this one's); None where the
        engine has no such connection to give."""
        return None

    def lock_table(self, relation: str) -> None:
        """Serialise writers of `relation` until the transaction ends (where the engine can)."""

    def missing(self, error: Exception) -> str | None:
        """'relation' or 'column' when `error` says one does not exist; None for any other error."""
        return None

    def json_array(self, value: str, condition: str) -> str:
        """A JSON array (as text) of `value` over the rows matching `condition`; null or [] if none."""
        raise NotImplementedError

    def json_object(self, fields: dict[str, str]) -> str:
        raise NotImplementedError

    def joined(self, text: str) -> str:
        """The aggregate of the text expression `text` over a group, joined by commas (in any order)."""
        return f"string_agg({text}, ',')"

    def ordered_joined(self, text: str, order: str) -> str:
        """The aggregate of the text expression `text` over a group, joined by commas in the order of `order`."""
        return f"string_agg({text}, ',' order by {order})"

    def close(self) -> None:
        """Close the cursor, and the connection if the engine opened it."""
        self._cursor.close()
        if self.owns_connection:
            self.connection.close()


class DuckDBEngine(Engine):
    adapter_type = "duckdb"

    def __init__(self, connection: Any, **options: Any) -> None:
        super().__init__(connection, **options)
        self._cursor = connection.cursor()

    def query(self, sql, params=()):
        return self._cursor.execute(sql, list(params)).fetchall()

    def concurrent(self):
        # a DuckDB cursor is a connection of its own to the same database
        return DuckDBEngine(self.connection, owns_connection=False)

    def execute(self, sql, params=()):
        rows = self._cursor.execute(sql, list(params)).fetchall()
        # DuckDB answers an insert, update or delete with its row count.
        return int(rows[0][0]) if rows and isinstance(rows[0][0], int) else -1

    def insert_rows(self, relation, columns, rows):
        # one list per column, unnested side by side: DuckDB binds a VALUES list of n rows at about
        # 150 us and several KB a row (a run's in-flight notes and acknowledged event ids are
        # thousands of rows a statement); a list parameter costs about 6 us a row
        if not rows:
            return
        self.execute(f"insert into {relation} ({', '.join(columns)}) select {', '.join('unnest(?)' for _ in columns)}",
                     [list(column) for column in zip(*rows, strict=True)])

    def json_array(self, value, condition):
        return f"to_json(list({value}) filter (where {condition}))"

    def json_object(self, fields):
        return "{" + ", ".join(f"'{key}': {value}" for key, value in fields.items()) + "}"

    def missing(self, error):
        import duckdb

        if isinstance(error, duckdb.CatalogException):
            return "relation"
        return "column" if isinstance(error, duckdb.BinderException) else None


class PostgresEngine(Engine):
    """psycopg2 (dbt-postgres's driver), in autocommit mode with explicit transactions."""

    adapter_type = "postgres"

    def __init__(self, connection: Any, **options: Any) -> None:
        super().__init__(connection, **options)
        connection.autocommit = True
        self._cursor = connection.cursor()

    def query(self, sql, params=()):
        self._cursor.execute(pyformat(sql), list(params))
        return self._cursor.fetchall()

    def execute(self, sql, params=()):
        self._cursor.execute(pyformat(sql), list(params))
        return self._cursor.rowcount

    def lock_table(self, relation):
        # Two publishers must not both find the lock free.
        self.execute(f"lock table {relation} in share row exclusive mode")

    def missing(self, error):
        return {"42P01": "relation", "42703": "column"}.get(getattr(error, "pgcode", None))

    def json_array(self, value, condition):
        # Cast to text: psycopg2 would otherwise parse the JSON into Python objects.
        return f"cast(json_agg({value}) filter (where {condition}) as text)"

    def json_object(self, fields):
        return "json_build_object(" + ", ".join(f"'{k}', {v}" for k, v in fields.items()) + ")"


class SparkEngine(Engine):
    """A dbt-spark (or dbt-databricks) connection handle: session, thrift, http or odbc.

    Its cursors take no safe bindings (values are pasted in with `%`), so
    literals are rendered here with Spark's escaping. Results come back
    with fetchall only, hence pages of batches.
    """

    adapter_type = "spark"
    transactional = False
    page_batches = 20

    def __init__(self, connection: Any, **options: Any) -> None:
        super().__init__(connection, **options)
        self._cursor = connection.cursor()

    def query(self, sql, params=()):
        cursor = self._fresh_cursor()
        cursor.execute(spark_sql(sql, params))
        return [tuple(row) for row in cursor.fetchall() or []]

    def execute(self, sql, params=()):
        self._fresh_cursor().execute(spark_sql(sql, params))
        return -1

    def _fresh_cursor(self):
        # A cursor per statement, as dbt does: the session cursor keeps the
        # first statement's rows for later fetchall calls.
        self._cursor = self.connection.cursor()
        return self._cursor

    @contextmanager
    def transaction(self):
        # No transactions: each write is an idempotent append (see the module doc).
        yield

    def missing(self, error):
        # Spark's error classes (3.4+) and older wording, in the error or what it wraps
        # (the session cursor wraps AnalysisException in dbt's DbtRuntimeError).
        text = " ".join(str(e) for e in causes(error))
        if "TABLE_OR_VIEW_NOT_FOUND" in text or "Table or view not found" in text:
            return "relation"
        return "column" if "UNRESOLVED_COLUMN" in text or "cannot resolve" in text else None

    def json_array(self, value, condition):
        return f"to_json(collect_list(case when {condition} then {value} end))"

    def json_object(self, fields):
        return "named_struct(" + ", ".join(f"'{k}', {v}" for k, v in fields.items()) + ")"

    def joined(self, text):
        return f"array_join(collect_list({text}), ',')"

    def ordered_joined(self, text, order):
        # collect_list keeps no order: sort (order, text) pairs, then keep the texts
        return f"array_join(transform(sort_array(collect_list(named_struct('o', {order}, 't', {text}))), pair -> pair.t), ',')"

    def close(self):
        # dbt-spark's thrift and odbc wrappers close the connection with the
        # cursor (their cursor() is the wrapper itself): close once.
        if self.owns_connection:
            self.connection.close()


def causes(error: BaseException) -> list[BaseException]:
    """The error and each one it was raised from, outermost first."""
    chain = [error]
    while chain[-1].__cause__ is not None and len(chain) < 10:
        chain.append(chain[-1].__cause__)
    return chain


def pyformat(sql: str) -> str:
    """`?` placeholders as psycopg2's `%s`."""
    if "%" in sql:
        raise ValueError("a literal % in ledger SQL would be read as a psycopg2 placeholder")
    return PLACEHOLDER.sub("%s", sql)


def spark_sql(sql: str, params) -> str:
    """The statement with each `?` replaced by its value as a Spark literal."""
    params = list(params)
    parts = PLACEHOLDER.split(sql)
    if len(parts) - 1 != len(params):
        raise TypeError(f"{len(parts) - 1} placeholders for {len(params)} parameters")
    rendered = [parts[0]]
    for value, part in zip(params, parts[1:], strict=True):
        rendered += [spark_literal(value), part]
    return "".join(rendered)


def spark_literal(value: Any) -> str:
    """A Spark SQL literal: strings escape backslash and quote (Spark reads '' as two strings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise TypeError(f"{value} has no Spark SQL literal")
        return repr(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise TypeError("timestamps are stored as naive UTC")
        return f"timestamp'{value:%Y-%m-%d %H:%M:%S.%f}'"
    if isinstance(value, date):
        return f"date'{value:%Y-%m-%d}'"
    if not isinstance(value, str):
        raise TypeError(f"no Spark SQL literal for {type(value).__name__}")
    text = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


ENGINES = {engine.adapter_type: engine for engine in (DuckDBEngine, PostgresEngine, SparkEngine)}
ENGINES["databricks"] = SparkEngine
