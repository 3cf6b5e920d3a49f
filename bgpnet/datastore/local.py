"""The embedded local store: one SQLite file, safe for several agents and CNI calls on one machine."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bgpnet.datastore.base import Datastore, Object
from bgpnet.errors import AlreadyExists, Conflict, DatastoreError, NotFound

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    revision INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS kind_revision (kind TEXT PRIMARY KEY, revision INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY CHECK (id = 0), revision INTEGER NOT NULL);
INSERT OR IGNORE INTO counter VALUES (0, 0);
"""


class LocalDatastore(Datastore):
    """Revisions come from one global counter bumped in the same transaction as each write."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._tx() as db:
            # One statement at a time: executescript() would commit our open transaction itself.
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    db.execute(stmt)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            # Switching a new file to WAL fails at once with "database is locked" (SQLite does not apply the
            # busy timeout here) while another process opens it too, e.g. three lab agents starting together.
            deadline = time.monotonic() + 30
            while True:
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def _tx(self):
        store = self

        class _Tx:
            def __enter__(self):
                self.db = store._db()
                try:
                    self.db.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as e:
                    raise DatastoreError(f"local store {store.path}: {e}") from None
                return self.db

            def __exit__(self, et, ev, tb):
                self.db.execute("ROLLBACK" if et else "COMMIT")
                return False

        return _Tx()

    @staticmethod
    def _bump(db, kind: str) -> int:
        db.execute("UPDATE counter SET revision = revision + 1 WHERE id = 0")
        (rev,) = db.execute("SELECT revision FROM counter WHERE id = 0").fetchone()
        db.execute("INSERT INTO kind_revision VALUES (?, ?) ON CONFLICT(kind) DO UPDATE SET revision = ?",
                   (kind, rev, rev))
        return rev

    def get(self, kind: str, name: str) -> Object | None:
        row = self._db().execute("SELECT spec, revision FROM objects WHERE kind = ? AND name = ?",
                                 (kind, name)).fetchone()
        return Object(kind, name, json.loads(row[0]), str(row[1])) if row else None

    def list(self, kind: str) -> list[Object]:
        rows = self._db().execute("SELECT name, spec, revision FROM objects WHERE kind = ? ORDER BY name",
                                  (kind,)).fetchall()
        return [Object(kind, n, json.loads(s), str(r)) for n, s, r in rows]

    def create(self, kind: str, name: str, spec: dict[str, Any]) -> Object:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM objects WHERE kind = ? AND name = ?", (kind, name)).fetchone():
                raise AlreadyExists(f"{kind} {name} already exists")
            rev = self._bump(db, kind)
            db.execute("INSERT INTO objects VALUES (?, ?, ?, ?)", (kind, name, json.dumps(spec), rev))
        return Object(kind, name, spec, str(rev))

    def update(self, obj: Object, spec: dict[str, Any]) -> Object:
        with self._tx() as db:
            row = db.execute("SELECT revision FROM objects WHERE kind = ? AND name = ?",
                             (obj.kind, obj.name)).fetchone()
            if row is None:
                raise NotFound(f"{obj.kind} {obj.name} not found")
            if str(row[0]) != obj.revision:
                raise Conflict(f"{obj.kind} {obj.name} changed (revision {row[0]}, had {obj.revision})")
            rev = self._bump(db, obj.kind)
            db.execute("UPDATE objects SET spec = ?, revision = ? WHERE kind = ? AND name = ?",
                       (json.dumps(spec), rev, obj.kind, obj.name))
        return Object(obj.kind, obj.name, spec, str(rev))

    def delete(self, kind: str, name: str, revision: str | None = None) -> None:
        with self._tx() as db:
            row = db.execute("SELECT revision FROM objects WHERE kind = ? AND name = ?", (kind, name)).fetchone()
            if row is None:
                raise NotFound(f"{kind} {name} not found")
            if revision is not None and str(row[0]) != revision:
                raise Conflict(f"{kind} {name} changed (revision {row[0]}, had {revision})")
            self._bump(db, kind)
            db.execute("DELETE FROM objects WHERE kind = ? AND name = ?", (kind, name))

    def revision(self, kinds: Iterable[str] | None = None) -> str:
        db = self._db()
        if kinds is None:
            (rev,) = db.execute("SELECT revision FROM counter WHERE id = 0").fetchone()
            return str(rev)
        kinds = list(kinds)
        marks = ",".join("?" * len(kinds))
        q = f"SELECT COALESCE(MAX(revision), 0) FROM kind_revision WHERE kind IN ({marks})"
        (rev,) = db.execute(q, kinds).fetchone()
        return str(rev)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
