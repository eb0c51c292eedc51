"""The inspection log's database: one schema on SQLite (the embedded default) or PostgreSQL (a URL).

One row per scored image in `inspections`; drift alarms (start, end) in `alarms`; the schema's
version in `schema_version`, raised by the numbered MIGRATIONS in order (each in one transaction,
under a lock, so two servers starting together migrate once). Times are UTC seconds since the epoch.

A store object is one connection: use one per thread (the log's writer, each watched folder, and a
fresh one per read). SQLite runs in WAL mode with a busy timeout, so several processes may write
the same file; PostgreSQL is reached through psycopg 3.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass, fields
from typing import Any, Iterable, Sequence

from utils.errors import UserError


@dataclass
class InspectionRow:
    """One scored image (or one image that could not be scored: decision 'error')."""
    ts: float
    model: str
    version: str
    source: str                   # "upload" (the page), "folder:<DIR name>", "api:<client id>"
    decision: str                 # normal | anomalous | error
    part_id: str | None = None
    sha256: str | None = None
    score: float | None = None
    normalized: float | None = None
    defect_area: float | None = None
    latency_ms: float | None = None
    error: str | None = None
    image_key: str | None = None  # unique when set: a watched folder's file (name + content), recorded once
    saved_image: str | None = None
    feedback: str | None = None
    feedback_ts: float | None = None


ROW_FIELDS = tuple(f.name for f in fields(InspectionRow))
_INSERTED = ROW_FIELDS[:-2]   # feedback comes later

# Each entry raises the schema by one version; {id} and {real} are filled in per database.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    ("""CREATE TABLE inspections (id {id}, ts {real} NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
            source TEXT NOT NULL, decision TEXT NOT NULL, part_id TEXT, sha256 TEXT, score {real},
            normalized {real}, defect_area {real}, latency_ms {real}, error TEXT, image_key TEXT UNIQUE,
            saved_image TEXT, feedback TEXT, feedback_ts {real})""",
     "CREATE INDEX inspections_model_ts ON inspections (model, ts)",
     "CREATE INDEX inspections_ts ON inspections (ts)",
     "CREATE INDEX inspections_sha256 ON inspections (sha256)"),
    ("""CREATE TABLE alarms (id {id}, model TEXT NOT NULL, version TEXT NOT NULL, kind TEXT NOT NULL,
            started {real} NOT NULL, ended {real}, value {real}, detail TEXT)""",
     "CREATE INDEX alarms_model ON alarms (model, started)"),
)
SCHEMA_VERSION = len(MIGRATIONS)


class LogStore:
    """One connection to the log's database; the SQL is written with '?' placeholders."""

    dialect = {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL"}
    minute = "CAST(ts / 60 AS INTEGER)"

    def __init__(self, connection: Any):
        self.connection = connection

    # --- per database --------------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql

    def _lock_for_migration(self) -> None:
        raise NotImplementedError

    # --- shared --------------------------------------------------------------------------------------
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.connection.execute(self._sql(sql), tuple(params))

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        rows = self.execute(sql, params).fetchall()
        self.connection.commit()   # end the read transaction: a long-lived reader must not pin old snapshots
        return rows

    def migrate(self) -> int:
        """Bring the schema to SCHEMA_VERSION; returns the version found before."""
        try:
            self._lock_for_migration()
            self.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            found = self.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
            if found > SCHEMA_VERSION:
                raise UserError(f"the inspection log's schema is version {found}, newer than this program's "
                                f"{SCHEMA_VERSION}: update the program or use another --log_db")
            for version in range(found + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version - 1]:
                    self.execute(statement.format(**self.dialect))
                self.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            self.connection.commit()
            return found
        except BaseException:
            self.connection.rollback()
            raise

    def insert(self, rows: Iterable[InspectionRow]) -> int:
        """Insert rows in one transaction; a row whose image_key is already logged is skipped."""
        columns = ", ".join(_INSERTED)
        marks = ", ".join("?" * len(_INSERTED))
        sql = f"INSERT INTO inspections ({columns}) VALUES ({marks}) ON CONFLICT (image_key) DO NOTHING"
        count = 0
        try:
            for row in rows:
                count += self.execute(sql, [getattr(row, name) for name in _INSERTED]).rowcount
            self.connection.commit()
        except BaseException:
            self.connection.rollback()
            raise
        return count

    def write(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            changed = self.execute(sql, params).rowcount
            self.connection.commit()
        except BaseException:
            self.connection.rollback()
            raise
        return changed

    def close(self) -> None:
        try:
            self.connection.close()
        except Exception:
            pass


SQLITE_BUSY_S = 5.0   # how long a connection waits for another server's lock


def _set_wal(connection: sqlite3.Connection) -> None:
    # Switching a new file to WAL needs an exclusive lock, and SQLite answers "database is locked" at
    # once (without the busy timeout) while a second server does the same: retry within the same bound.
    deadline = time.monotonic() + SQLITE_BUSY_S
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class SQLiteStore(LogStore):
    def __init__(self, path: str):
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
            connection = sqlite3.connect(path, timeout=SQLITE_BUSY_S, check_same_thread=False,
                                         isolation_level="DEFERRED")
            _set_wal(connection)
            connection.execute("PRAGMA synchronous=NORMAL")   # WAL + NORMAL: durable at each checkpoint, never corrupt
        except (OSError, sqlite3.Error) as err:
            raise UserError(f"--log_db {path}: cannot open the inspection log ({err})") from None
        super().__init__(connection)

    def _lock_for_migration(self) -> None:
        self.connection.execute("BEGIN IMMEDIATE")   # one writer at a time: a second server waits, then sees it done


class PostgresStore(LogStore):
    dialect = {"id": "BIGSERIAL PRIMARY KEY", "real": "DOUBLE PRECISION"}
    minute = "CAST(FLOOR(ts / 60) AS BIGINT)"
    _MIGRATION_LOCK = 0x50434C47   # any fixed number: the advisory lock every server takes to migrate

    def __init__(self, url: str):
        try:
            import psycopg
        except ImportError:
            raise UserError("--log_db postgresql://...: needs psycopg (pip install 'psycopg[binary]')") from None
        try:
            connection = psycopg.connect(url, connect_timeout=5)
        except psycopg.Error as err:
            raise UserError(f"--log_db: cannot connect to PostgreSQL ({str(err).strip().splitlines()[0]})") from None
        super().__init__(connection)

    def _sql(self, sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def _lock_for_migration(self) -> None:
        self.execute("SELECT pg_advisory_xact_lock(?)", (self._MIGRATION_LOCK,))


def is_postgres(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def open_store(target: str) -> LogStore:
    """A new connection to the log at `target` (a SQLite file path or a postgresql:// URL)."""
    return PostgresStore(target) if is_postgres(target) else SQLiteStore(target)


def describe_target(target: str) -> str:
    """The log's place for messages: a URL without its password."""
    if is_postgres(target):
        scheme, _, rest = target.partition("://")
        credentials, at, host = rest.rpartition("@")
        return f"{scheme}://{credentials.split(':')[0]}@{host}" if at else target
    return target


_migrated: set[str] = set()
_migrated_lock = threading.Lock()


def prepare(target: str) -> None:
    """Create or migrate the log's schema (once per process and target)."""
    with _migrated_lock:
        if target in _migrated:
            return
        store = open_store(target)
        try:
            store.migrate()
        except UserError:
            raise
        except Exception as err:
            raise UserError(f"--log_db {describe_target(target)}: cannot prepare the inspection log ({err})") from None
        finally:
            store.close()
        _migrated.add(target)
