"""Fold a stream of events into the state of the watched prefixes: the public consumer API.

Every consumer that keeps state (a cache, a search index, ``etcd-bridge verify``) needs the
same fold, and each rule is easy to get wrong on its own:

- **Dedupe by position.** A sink may hand over an event again (an at-least-once sink after a
  crash, a consumer that re-reads from an earlier offset): anything at or below the last
  position applied is skipped and counted in ``Fold.skipped``.
- **Snapshot frames.** Between ``snapshot_begin`` and ``snapshot_end`` the keys seen are
  collected; at ``snapshot_end`` every key the snapshot did not contain is dropped, whatever
  the reason (``initial``, ``compacted``, ``requested``, ``lost``). That is what makes a
  resync after compaction correct: keys deleted while the history was lost are simply absent
  from it. A ``snapshot_begin`` inside a snapshot starts it again (the bridge abandons a
  snapshot whose revision was compacted under it).
- **Whole revisions.** The state is the prefix's state at a revision only between
  revisions: not inside a snapshot, and not after a change whose ``more`` is set (one etcd
  transaction is one revision, handed over in pieces). The fold commits its store at every
  such point, so ``Fold.rollback`` returns to the last one: ``verify`` folds a sink to its
  end, then rolls back the unfinished tail.

The store is pluggable (``StateStore``): ``MemoryStore``, a dict, by default; ``SqliteStore``
(stdlib sqlite3, a temporary file) keeps memory flat for any prefix size. One ``Fold`` serves
both, so a consumer and ``verify`` fold the same way. Formats that do not mark ``more``
(Debezium) make every change look like the end of its revision; see docs/verify.md.
"""

import abc
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from bridge.events import Event, EventType, Op, Position


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key of the state, with what etcd says of it."""

    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int
    version: int
    lease: int

    @classmethod
    def of(cls, event: Event) -> "KeyValue":
        """The key-value a PUT or snapshot event leaves behind."""
        return cls(
            event.key,
            event.value or b"",
            event.mod_revision,
            event.create_revision,
            event.version,
            event.lease,
        )


class StateStore(abc.ABC):
    """Where a ``Fold`` keeps the state: a transactional map from key to ``KeyValue``.

    ``commit`` and ``rollback`` bound a transaction; the fold commits at every whole
    revision. ``begin_snapshot`` opens a generation: every key put from then on belongs to
    it, and ``drop_unseen`` deletes the keys that do not."""

    @abc.abstractmethod
    def get(self, key: bytes) -> KeyValue | None:
        """The key's entry, or None."""

    @abc.abstractmethod
    def put(self, entry: KeyValue) -> None:
        """Set the key's entry, marking it seen by the current snapshot generation."""

    @abc.abstractmethod
    def delete(self, key: bytes) -> None:
        """Remove the key if present."""

    @abc.abstractmethod
    def begin_snapshot(self) -> None:
        """Start a new generation: keys not put again before ``drop_unseen`` go."""

    @abc.abstractmethod
    def drop_unseen(self) -> int:
        """Delete every key not put since ``begin_snapshot``; returns how many."""

    @abc.abstractmethod
    def items(self) -> Iterator[KeyValue]:
        """Every entry in key order (bytes), read lazily where the store allows."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """How many keys the state holds."""

    @abc.abstractmethod
    def commit(self) -> None:
        """The state is whole here: ``rollback`` comes back to this point."""

    @abc.abstractmethod
    def rollback(self) -> None:
        """Undo everything since the last ``commit``."""

    def close(self) -> None:  # noqa: B027 - optional hook; the dict store holds nothing
        """Release what the store holds; idempotent."""


class MemoryStore(StateStore):
    """The state in a dict; an undo log since the last commit makes it transactional (it
    holds references to the entries replaced, so a snapshot costs at most one more pointer
    per key until its end)."""

    def __init__(self) -> None:
        self.entries: dict[bytes, KeyValue] = {}
        self._generations: dict[bytes, int] = {}
        self._generation = 0
        self._undo: dict[bytes, tuple[KeyValue, int] | None] = {}
        self._committed_generation = 0

    def get(self, key: bytes) -> KeyValue | None:
        return self.entries.get(key)

    def put(self, entry: KeyValue) -> None:
        self._remember(entry.key)
        self.entries[entry.key] = entry
        self._generations[entry.key] = self._generation

    def delete(self, key: bytes) -> None:
        if key in self.entries:
            self._remember(key)
            del self.entries[key]
            del self._generations[key]

    def begin_snapshot(self) -> None:
        self._generation += 1

    def drop_unseen(self) -> int:
        current = self._generation
        unseen = [key for key, seen in self._generations.items() if seen != current]
        for key in unseen:
            self.delete(key)
        return len(unseen)

    def items(self) -> Iterator[KeyValue]:
        entries = self.entries
        return (entries[key] for key in sorted(entries))

    def __len__(self) -> int:
        return len(self.entries)

    def commit(self) -> None:
        if self._undo:
            self._undo.clear()
        self._committed_generation = self._generation

    def rollback(self) -> None:
        for key, previous in self._undo.items():
            if previous is None:
                self.entries.pop(key, None)
                self._generations.pop(key, None)
            else:
                self.entries[key], self._generations[key] = previous
        self._undo.clear()
        self._generation = self._committed_generation

    def _remember(self, key: bytes) -> None:
        """Keep the key's entry as of the last commit, once per transaction."""
        if key not in self._undo:
            entry = self.entries.get(key)
            self._undo[key] = None if entry is None else (entry, self._generations[key])


_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    key BLOB PRIMARY KEY, value BLOB NOT NULL, mod_revision INTEGER NOT NULL,
    create_revision INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL,
    generation INTEGER NOT NULL
) WITHOUT ROWID
"""
_ITEMS_PAGE = 1000


class SqliteStore(StateStore):
    """The state in an sqlite3 database on disk, so memory stays flat for any prefix size.

    By default the database is a temporary file, deleted on ``close``. Writes are not synced
    (``synchronous=OFF``: the file is scratch; a crash loses it, never corrupts a reader), and
    the write-ahead log keeps a commit per whole revision cheap (about 15 us). ``items`` reads
    in key order (BLOBs compare as bytes, as etcd orders keys), a page at a time."""

    def __init__(self, path: str | None = None) -> None:
        """``path``: the database file to use (kept on close); None: a temporary one."""
        self._temporary: str | None = None
        if path is None:
            descriptor, path = tempfile.mkstemp(prefix="etcd-bridge-state-", suffix=".sqlite3")
            os.close(descriptor)
            self._temporary = path
        self._path = path
        self._db: sqlite3.Connection | None = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(_SCHEMA)
        self._generation = int(
            self._db.execute("SELECT coalesce(max(generation), 0) FROM state").fetchone()[0]
        )
        self._committed_generation = self._generation
        self._db.execute("BEGIN")

    def get(self, key: bytes) -> KeyValue | None:
        row = (
            self._require()
            .execute(
                "SELECT key, value, mod_revision, create_revision, version, lease "
                "FROM state WHERE key = ?",
                (key,),
            )
            .fetchone()
        )
        return None if row is None else KeyValue(*row)

    def put(self, entry: KeyValue) -> None:
        self._require().execute(
            "INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                entry.key,
                entry.value,
                entry.mod_revision,
                entry.create_revision,
                entry.version,
                entry.lease,
                self._generation,
            ),
        )

    def delete(self, key: bytes) -> None:
        self._require().execute("DELETE FROM state WHERE key = ?", (key,))

    def begin_snapshot(self) -> None:
        self._generation += 1

    def drop_unseen(self) -> int:
        cursor = self._require().execute(
            "DELETE FROM state WHERE generation != ?", (self._generation,)
        )
        return int(cursor.rowcount)

    def items(self) -> Iterator[KeyValue]:
        """Pages of ``_ITEMS_PAGE`` keys, each read after the last key of the one before, so
        that nothing stays open across pages (a fold may go on between them)."""
        query = (
            "SELECT key, value, mod_revision, create_revision, version, lease FROM state "
            "WHERE key > ? ORDER BY key LIMIT ?"
        )
        after = b""
        while True:
            rows = self._require().execute(query, (after, _ITEMS_PAGE)).fetchall()
            for row in rows:
                yield KeyValue(*row)
            if len(rows) < _ITEMS_PAGE:
                return
            after = rows[-1][0]

    def __len__(self) -> int:
        return int(self._require().execute("SELECT count(*) FROM state").fetchone()[0])

    def commit(self) -> None:
        db = self._require()
        db.execute("COMMIT")
        db.execute("BEGIN")
        self._committed_generation = self._generation

    def rollback(self) -> None:
        db = self._require()
        db.execute("ROLLBACK")
        db.execute("BEGIN")
        self._generation = self._committed_generation

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._temporary is not None:
            for suffix in ("", "-wal", "-shm"):
                try:
                    os.unlink(self._temporary + suffix)
                except FileNotFoundError:
                    pass
            self._temporary = None

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise ValueError(f"the state store {self._path} is closed")
        return self._db


class Fold:
    """The state of the watched prefixes, built by applying events in position order.

    ``apply`` one event at a time (a live subscription), or ``apply_all`` an iterable (a
    sink's reader). The store holds the state after ``position``; when ``whole`` is True that
    is the prefix's state at ``position.revision``, which ``revision`` then equals."""

    def __init__(self, store: StateStore | None = None) -> None:
        self.store: StateStore = MemoryStore() if store is None else store
        self.position: Position | None = None
        """The last event applied (None: none yet)."""
        self.revision = 0
        """The last revision the state held completely (0: none yet)."""
        self.whole_position: Position | None = None
        """The position of that last whole point, where ``rollback`` returns."""
        self.in_snapshot = False
        """Between a ``snapshot_begin`` and its ``snapshot_end``."""
        self.skipped = 0
        """Events skipped because their position was at or below ``position``."""

    @property
    def whole(self) -> bool:
        """The state is the prefix's state at ``position.revision``."""
        return self.position is not None and self.position == self.whole_position

    def apply(self, event: Event) -> bool:
        """Apply one event; False when it is skipped as already applied (its position is at
        or below ``position``)."""
        position = event.position
        if self.position is not None and position <= self.position:
            self.skipped += 1
            return False
        store, op = self.store, event.op
        if op is Op.SNAPSHOT_BEGIN:
            self.in_snapshot = True
            store.begin_snapshot()
        elif op is Op.SNAPSHOT_END:
            store.drop_unseen()
            self.in_snapshot = False
        elif event.type is EventType.DELETE:
            store.delete(event.key)
        else:  # a PUT: a created, updated or snapshot key
            store.put(KeyValue.of(event))
        self.position = position
        if not self.in_snapshot and not event.more:
            store.commit()
            self.whole_position = position
            self.revision = position.revision
        return True

    def apply_all(self, events: Iterable[Event]) -> None:
        """Apply every event, in the order given."""
        apply = self.apply
        for event in events:
            apply(event)

    def rollback(self) -> None:
        """Undo the events applied since the last whole point (an unfinished revision or
        snapshot at the end of what was read)."""
        self.store.rollback()
        self.position = self.whole_position
        self.in_snapshot = False

    def close(self) -> None:
        self.store.close()
