"""The engines the suites run on, from the test's side: a dbt profile output,
raw tables to read audiences from, and queries to check what the package
wrote. DuckDB is a file per project; PostgreSQL is a real server started on
127.0.0.1 for the test session (a database per project); Spark is local
PySpark in the test process (a schema per project), the JVM shared with
the in-process dbt runs through the `session` method.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from cohort_sync.warehouse.engines import pyformat, spark_sql

ENGINES = ("duckdb", "postgres", "spark")


class Warehouse:
    name = "duckdb"
    #: `dbt run` publishes in-process (the cohort_sync_publish Python model runs on DuckDB only).
    publishes_in_dbt = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self.database = root / "warehouse.duckdb"
        self.schema = "main"
        self.raw_schema = "raw"

    def output(self) -> dict[str, Any]:
        return {"type": "duckdb", "path": str(self.database), "threads": 1}

    def load(self, table: str, columns: dict[str, Sequence[Any]], types: dict[str, str]) -> None:
        """(Re)write raw.<table>; types are 'string' (default), 'bigint' or 'int'."""
        names = list(columns)
        select = ", ".join(
            f"unnest(?::{DUCKDB_TYPES.get(types.get(name, 'string'), types.get(name))}[]) as {name}" for name in names
        )
        with duckdb.connect(str(self.database)) as con:
            con.execute(f"create schema if not exists {self.raw_schema}")
            con.execute(
                f"create or replace table {self.raw_schema}.{table} as select {select}",
                [list(columns[name]) for name in names],
            )

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Rows of `sql` (`?` placeholders) in the project's schema."""
        return self.columns(sql, params)[1]

    def columns(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[tuple]]:
        """Column names and rows of `sql`."""
        with duckdb.connect(str(self.database)) as con:
            cursor = con.execute(sql, list(params))
            return [d[0] for d in cursor.description], cursor.fetchall()


DUCKDB_TYPES = {"string": "varchar", "bigint": "bigint", "int": "integer"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- PostgreSQL ---------------------------------------------------------------------


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (Debian's server binaries).

    Every connection is trusted but those of PASSWORD_ROLE, which must give
    its password (see password_login).
    """

    PASSWORD_ROLE = "cohort_sync_password_login"

    def __init__(self) -> None:
        bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bindirs or not os.path.exists(os.path.join(bindirs[-1], "initdb")):
            raise RuntimeError(
                "PostgreSQL server binaries not found under /usr/lib/postgresql: "
                "`make test` installs them (apt-get install postgresql)"
            )
        self.bin = Path(bindirs[-1])
        self.dir = Path(tempfile.mkdtemp(prefix="cohort-sync-pg-"))
        self.port = free_port()
        # initdb refuses to run as root: run the server as the postgres user then.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.dir, "postgres")

    def start(self) -> PostgresServer:
        data = self.dir / "data"
        # UTF-8 whatever the machine's locale: identifiers are Unicode.
        self._run(str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync")
        hba = data / "pg_hba.conf"  # the first matching line decides
        hba.write_text(f"host all {self.PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(data), "-w", "-l", str(self.dir / "server.log"),
            "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                  "-c synchronous_commit=off -c full_page_writes=off",
            "start",
        )
        return self

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def _run(self, *command: str) -> None:
        subprocess.run([*self._as, *command], check=True, capture_output=True, timeout=120)

    def connect(self, dbname: str = "postgres"):
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname)
        connection.autocommit = True
        return connection

    def password_login(self, dbname: str) -> tuple[str, str]:
        """(user, password) of a role that logs in only with its password (new at each
        call), owning `dbname`: a wrong password is refused, unlike the trusted postgres user."""
        password = "PGPASSWORD-" + secrets.token_hex(8)
        connection = self.connect()
        with connection.cursor() as cursor:
            cursor.execute("select 1 from pg_roles where rolname = %s", [self.PASSWORD_ROLE])
            if not cursor.fetchall():
                cursor.execute(f"create role {self.PASSWORD_ROLE} login")
            cursor.execute(f"alter role {self.PASSWORD_ROLE} password %s", [password])
            cursor.execute(f"alter database {dbname} owner to {self.PASSWORD_ROLE}")
        connection.close()
        return self.PASSWORD_ROLE, password

    def create_database(self) -> str:
        name = "p_" + uuid.uuid4().hex[:12]
        connection = self.connect()  # not `with connection`: that opens a transaction block
        with connection.cursor() as cursor:
            cursor.execute(f"create database {name}")
        connection.close()
        return name


class PostgresWarehouse(Warehouse):
    name = "postgres"
    publishes_in_dbt = False

    def __init__(self, root: Path, server: PostgresServer) -> None:
        self.root = root
        self.server = server
        self.dbname = server.create_database()
        self.schema = "analytics"
        self.raw_schema = "raw"

    def output(self):
        return {
            "type": "postgres", "host": "127.0.0.1", "port": self.server.port, "user": "postgres",
            "password": "", "dbname": self.dbname, "schema": self.schema, "threads": 1,
        }

    def load(self, table, columns, types):
        names = list(columns)
        select = ", ".join(f"unnest(%s::{POSTGRES_TYPES.get(types.get(n, 'string'), types.get(n))}[]) as {n}" for n in names)
        connection = self.server.connect(self.dbname)
        with connection.cursor() as cursor:
            cursor.execute(f"create schema if not exists {self.raw_schema}")
            cursor.execute(f"drop table if exists {self.raw_schema}.{table} cascade")
            cursor.execute(f"create table {self.raw_schema}.{table} as select {select}",
                           [list(columns[n]) for n in names])
        connection.close()

    def columns(self, sql, params=()):
        connection = self.server.connect(self.dbname)
        with connection.cursor() as cursor:
            cursor.execute(f"set search_path to {self.schema}")
            cursor.execute(pyformat(sql), list(params))
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        connection.close()
        return names, rows


POSTGRES_TYPES = {"string": "text", "bigint": "bigint", "int": "integer"}


# -- Spark --------------------------------------------------------------------------


def spark_parameters(home: Path) -> dict[str, str]:
    """Session settings for local Spark: loopback only, small, metastore and tables under `home`."""
    return {
        "spark.master": "local[2]",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "2",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.warehouse.dir": str(home / "spark-warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={home / 'metastore_db'};create=true",
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={home} -Duser.timezone=UTC",
    }


def spark_output(schema: str, home: Path) -> dict[str, Any]:
    return {
        "type": "spark", "method": "session", "host": "localhost", "schema": schema,
        "threads": 1, "server_side_parameters": spark_parameters(home),
    }


class SparkSessionHome:
    """The test process's one Spark session (one JVM); dbt's session method reuses it."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="cohort-sync-spark-"))
        self.session = None

    def start(self) -> SparkSessionHome:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        from pyspark.sql import SparkSession

        builder = SparkSession.builder.enableHiveSupport()
        for key, value in spark_parameters(self.home).items():
            builder = builder.config(key, value)
        self.session = builder.getOrCreate()
        self.session.sparkContext.setLogLevel("ERROR")
        return self

    def stop(self) -> None:
        if self.session is not None:
            self.session.stop()
        shutil.rmtree(self.home, ignore_errors=True)


class SparkOwnProcesses(Warehouse):
    """Spark used only by subprocesses (`dbt`, `cohort-sync`), each its own JVM, with a
    metastore of its own: not the test process's session (Derby admits one JVM)."""

    name = "spark"
    publishes_in_dbt = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.schema = "analytics"

    def output(self):
        return spark_output(self.schema, self.root / "spark")


class SparkWarehouse(Warehouse):
    name = "spark"
    publishes_in_dbt = False

    def __init__(self, root: Path, spark: SparkSessionHome) -> None:
        self.root = root
        self.spark = spark
        self.schema = "p_" + uuid.uuid4().hex[:12]
        self.raw_schema = self.schema + "_raw"

    def output(self):
        return spark_output(self.schema, self.spark.home)

    def load(self, table, columns, types):
        names = list(columns)
        schema = ", ".join(f"{n} {types.get(n, 'string')}" for n in names)
        rows = list(zip(*(columns[n] for n in names), strict=True))
        session = self.spark.session
        session.sql(f"create database if not exists {self.raw_schema}")
        session.createDataFrame(rows, schema=schema).write.mode("overwrite").saveAsTable(
            f"{self.raw_schema}.{table}"
        )

    def columns(self, sql, params=()):
        session = self.spark.session
        session.catalog.setCurrentDatabase(self.schema)
        frame = session.sql(spark_sql(sql, params))
        return frame.columns, [tuple(row) for row in frame.collect()]
