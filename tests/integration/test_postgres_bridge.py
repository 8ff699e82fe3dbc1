"""etcd -> ``etcd-bridge run`` (a subprocess, configured by environment) -> PostgreSQL, with
the bridge killed by SIGKILL again and again while a writer keeps changing etcd.

What etcd did is recorded independently (``tests.history.RecordingWriter``) and compared with
what SQL reads: every change exactly once, in order, in the changelog; in mirror mode, the
table equal to the prefix at the end and, at every moment a reader looked during the kills, to
etcd's state at the revision ``consistent_revision`` names: never half a transaction, although
batches of 7 events cut the writer's transactions of up to 6 keys all the time.
"""

import contextlib
import threading
from collections.abc import Iterator

import psycopg
import pytest

from bridge.events import Op
from tests.fixtures.bridge import BridgeFactory
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.postgres import PostgresDatabase
from tests.fixtures.processes import wait_for
from tests.history import Change, RecordingWriter, assert_exactly_once
from tests.integration.test_postgres_sink import PIPELINE, changelog

KILLS = 5


def bridge_env(
    etcd: EtcdServer, database: PostgresDatabase, *, prefix: str, mode: str
) -> dict[str, str]:
    return {
        "BRIDGE_ETCD__ENDPOINTS": etcd.url,
        "BRIDGE_ETCD__PREFIX": prefix,
        "BRIDGE_NAME": PIPELINE,
        "BRIDGE_SINKS": "postgres",
        "BRIDGE_POSTGRES__DSN": database.dsn,
        "BRIDGE_POSTGRES__MODE": mode,
        "BRIDGE_PUMP__BATCH_EVENTS": "7",
    }


def positions(database: PostgresDatabase, mode: str) -> tuple[int, int]:
    """(revision of the tail, consistent_revision) as the bridge committed them; 0 for none."""
    with database.connect() as connection:
        if not tables_exist(connection):
            return 0, 0
        row = connection.execute(
            "SELECT revision, consistent_revision FROM etcd_bridge_positions "
            "WHERE pipeline = %s AND mode = %s",
            (PIPELINE, mode),
        ).fetchone()
    if row is None:
        return 0, 0
    revision, consistent = row
    return int(revision or 0), int(consistent or 0)  # type: ignore[call-overload]


def tables_exist(connection: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Whether the bridge created its tables yet (its first start does)."""
    row = connection.execute("SELECT to_regclass('etcd_bridge_positions')").fetchone()
    return row is not None and row[0] is not None


def state_at(changes: list[Change], revision: int) -> dict[bytes, bytes]:
    """The prefix after every change up to ``revision``: etcd's state at that revision."""
    state: dict[bytes, bytes] = {}
    for change in changes:
        if change.revision > revision:
            break
        if change.value is None:
            state.pop(change.key, None)
        else:
            state[change.key] = change.value
    return state


class MirrorReader:
    """Reads the mirror and its consistent_revision in one REPEATABLE READ transaction, over
    and over, from its own thread, until stopped."""

    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        self.seen: list[tuple[int | None, dict[bytes, bytes]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="mirror-reader")

    def _run(self) -> None:
        with psycopg.connect(self.database.dsn, autocommit=True) as connection:
            connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            while not self.stop.wait(0.05):  # pacing the reads, not waiting for a condition
                if not tables_exist(connection):
                    continue
                with connection.transaction():
                    row = connection.execute(
                        "SELECT consistent_revision FROM etcd_bridge_positions "
                        "WHERE pipeline = %s AND mode = 'mirror'",
                        (PIPELINE,),
                    ).fetchone()
                    rows = connection.execute(
                        "SELECT key, value FROM etcd_bridge_mirror WHERE pipeline = %s",
                        (PIPELINE,),
                    ).fetchall()
                revision = None if row is None else row[0]
                self.seen.append((revision, {bytes(k): bytes(v) for k, v in rows}))

    def __enter__(self) -> "MirrorReader":
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(10)


class BusyWriter:
    """A writer that has made 100 changes and keeps changing the prefix from its own thread,
    until ``finish`` (and 1,500 changes at least)."""

    def __init__(self, writer: RecordingWriter) -> None:
        self.writer = writer
        for _ in range(100):
            writer.step()
        self.enough = threading.Event()
        self.thread = threading.Thread(target=self._run, name="etcd-writer")
        self.thread.start()

    def _run(self) -> None:
        for _ in range(20000):  # bounded; stops as soon as the test has what it needs
            if self.enough.is_set() and len(self.writer.changes) > 1500:
                return
            self.writer.step()

    def finish(self) -> list[Change]:
        """Stop writing; every change made, in order."""
        self.enough.set()
        self.thread.join(120)
        assert not self.thread.is_alive(), "the writer did not stop"
        return self.writer.changes


@pytest.fixture
def busy_writer(etcd: EtcdServer, prefix: str) -> Iterator[BusyWriter]:
    with etcd.client() as client:
        busy = BusyWriter(RecordingWriter(client, prefix=prefix, seed=9))
        try:
            yield busy
        finally:
            busy.finish()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["changelog", "mirror"])
def test_kill_9_of_the_bridge_leaves_every_change_exactly_once(
    etcd: EtcdServer,
    postgres_database: PostgresDatabase,
    bridge_factory: BridgeFactory,
    busy_writer: BusyWriter,
    prefix: str,
    mode: str,
) -> None:
    env = bridge_env(etcd, postgres_database, prefix=prefix, mode=mode)
    reader = MirrorReader(postgres_database) if mode == "mirror" else contextlib.nullcontext()
    with reader:
        for _round in range(KILLS):
            before = positions(postgres_database, mode)[0]
            bridge = bridge_factory.start(**env)
            # Kill once this run has made something durable: mid-stream, not at start-up.
            wait_for(
                lambda before=before: positions(postgres_database, mode)[0] > before,  # type: ignore[misc]
                timeout=30,
                what="the bridge to make progress",
            )
            bridge.kill()
        changes = busy_writer.finish()
        bridge = bridge_factory.start(**env)
        wait_for(
            lambda: positions(postgres_database, mode)[1] >= changes[-1].revision,
            timeout=60,
            what=f"revision {changes[-1].revision} in postgres",
        )
        assert bridge.terminate() == 0, bridge.log_text()
    if mode == "changelog":
        events = changelog(postgres_database)
        assert sum(event.op is Op.SNAPSHOT_END for event in events) == 1
        assert_exactly_once(events, changes, after=events[0].revision)
    else:
        with postgres_database.connect() as connection:
            rows = connection.execute("SELECT key, value FROM etcd_bridge_mirror").fetchall()
        assert {bytes(k): bytes(v) for k, v in rows} == state_at(changes, changes[-1].revision)
        assert isinstance(reader, MirrorReader)
        observed = [(revision, seen) for revision, seen in reader.seen if revision is not None]
        assert len({revision for revision, _ in observed}) > KILLS, "too few distinct states seen"
        for revision, seen in observed:
            assert seen == state_at(changes, revision), f"at revision {revision}"
        assert all(not seen for revision, seen in reader.seen if revision is None)
