"""The PostgreSQL sink's readers (``sinks.postgres.reader``) against what SQL of the tests' own
reads (``tests.fixtures.postgres``) and against etcd itself, on tables the real bridge wrote.

Two bridges (``python -m bridge run``), one per mode, write one history into one database: an
initial snapshot of keys written before they start (keys whose byte order is not their
collation order, a non-UTF-8 one among them), then puts, updates, deletes and multi-key
transactions, cut into batches of 7 events so that revisions straddle batches (the mirror
stages them), and last a transaction putting the odd keys again. The changelog reader must
yield exactly the rows SQL reads, in position order, from the start and past any position,
in pages of any size; the mirror's reader must give etcd's own range of the prefix at the
revision it reports, key for key, in byte order, and keep to that revision while the table
changes under it. A row deleted from the changelog
must be missing from what the reader yields; a reader must create nothing, need nothing but
``SELECT``, and fail in one line naming the setting.
"""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pyetcd import etcdrpc

from bridge.errors import SinkRejectedError, SinkUnavailableError
from bridge.events import Event, EventType, Op, Position
from config.keyspace import KeySpace, prefix_range
from sinks.postgres.reader import ChangelogReader, MirrorReader
from tests.fixtures.bridge import BridgeFactory
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.postgres import (
    Connection,
    PostgresDatabase,
    PostgresServer,
    changelog_events,
    changelog_tail,
    create_database,
)
from tests.fixtures.processes import free_port, wait_for
from tests.history import RecordingWriter
from tests.sinks.base import build_reader

STEPS = 80
CHANGELOG = "pchangelog"
MIRROR = "pmirror"
ODD_KEYS = (b"B", b"_x", b"a", b"a\x00b", b"\xff\x00odd")
"""Below the prefix: byte order (B, _x, a, a\\x00b, \\xff...) is not a text collation's."""


@dataclass(frozen=True)
class Written:
    """What the bridges wrote: the database, the prefix, and the last revision of the history."""

    database: PostgresDatabase
    prefix: bytes
    last: int


@pytest.fixture(scope="module")
def written(
    etcd: EtcdServer,
    postgres_server: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Written]:
    prefix = f"/test/{uuid.uuid4().hex[:10]}/"
    database = create_database(postgres_server)
    factory = BridgeFactory(tmp_path_factory.mktemp("postgres-reader-bridges"))
    try:
        with etcd.client() as client:
            writer = RecordingWriter(client, prefix=prefix, seed=23)
            writer.put_keys([(f"{prefix}seed/{n:02d}".encode(), b"s%d" % n) for n in range(12)])
            writer.put_keys([(prefix.encode() + key, b"\x00\xff" + key) for key in ODD_KEYS])
            bridges = [
                factory.start(
                    BRIDGE_ETCD__ENDPOINTS=etcd.url,
                    BRIDGE_ETCD__PREFIX=prefix,
                    BRIDGE_NAME=pipeline,
                    BRIDGE_SINKS="postgres",
                    BRIDGE_POSTGRES__DSN=database.dsn,
                    BRIDGE_POSTGRES__MODE=mode,
                    BRIDGE_PUMP__BATCH_EVENTS="7",
                )
                for pipeline, mode in ((CHANGELOG, "changelog"), (MIRROR, "mirror"))
            ]
            for bridge in bridges:
                bridge.wait_watching()
            for _ in range(STEPS):
                writer.step()
            writer.put_keys([(prefix.encode() + key, b"again" + key) for key in ODD_KEYS])
        last = writer.changes[-1].revision
        wait_for(
            lambda: changelog_revision(database) >= last and mirror_revision(database) >= last,
            timeout=30,
            what=f"revision {last} in both modes",
        )
        for bridge in bridges:
            assert bridge.terminate() == 0, bridge.log_text()
        yield Written(database=database, prefix=prefix.encode(), last=last)
    finally:
        factory.stop_all()
        database.drop()


def changelog_revision(database: PostgresDatabase) -> int:
    with database.connect() as connection:
        tail = changelog_tail(connection, pipeline=CHANGELOG)
    return 0 if tail is None else tail.revision


def mirror_revision(database: PostgresDatabase) -> int:
    with database.connect() as connection:
        if not exists(connection, "etcd_bridge_positions"):
            return 0
        row = connection.execute(
            "SELECT consistent_revision FROM etcd_bridge_positions WHERE pipeline = %s",
            (MIRROR,),
        ).fetchone()
    return 0 if row is None or row[0] is None else int(row[0])  # type: ignore[call-overload]


def exists(connection: Connection, table: str) -> bool:
    row = connection.execute("SELECT to_regclass(%s)", (table,)).fetchone()
    return row is not None and row[0] is not None


def changelog_reader(dsn: str, **settings: Any) -> ChangelogReader:
    reader = build_reader(
        "postgres", pipeline=CHANGELOG, keyspace=KeySpace.of([b"/"]), dsn=dsn, **settings
    )
    assert isinstance(reader, ChangelogReader)
    return reader


def mirror_reader(dsn: str, **settings: Any) -> MirrorReader:
    reader = build_reader(
        "postgres",
        pipeline=MIRROR,
        keyspace=KeySpace.of([b"/"]),
        dsn=dsn,
        mode="mirror",
        **settings,
    )
    assert isinstance(reader, MirrorReader)
    return reader


def sql_events(database: PostgresDatabase) -> list[Event]:
    with database.connect() as connection:
        return changelog_events(connection, pipeline=CHANGELOG)


def test_the_changelog_reader_yields_the_rows_in_position_order(written: Written) -> None:
    expected = sql_events(written.database)
    ops = {event.op for event in expected}
    assert {Op.SNAPSHOT_BEGIN, Op.SNAPSHOT, Op.SNAPSHOT_END, Op.CREATE, Op.DELETE} <= ops
    assert any(event.more for event in expected), "no multi-key transaction"
    assert any(event.key.endswith(b"\xff\x00odd") for event in expected)
    with changelog_reader(written.database.dsn) as reader:
        read = list(reader.events())
        reader.page_rows = 4
        paged = list(reader.events())
    assert read == expected
    assert paged == expected
    assert [event.more for event in read] == [event.more for event in expected]
    positions = [event.position for event in read]
    assert positions == sorted(set(positions))


def test_after_starts_right_past_any_position(written: Written) -> None:
    expected = sql_events(written.database)
    inside = next(event for event in expected if event.more)
    end = next(event for event in expected if event.op is Op.SNAPSHOT_END)
    afters = [
        Position(0, 0),
        expected[0].position,
        end.position,
        inside.position,
        Position(inside.revision, 999),
        expected[len(expected) // 2].position,
        expected[-1].position,
    ]
    with changelog_reader(written.database.dsn) as reader:
        reader.page_rows = 5
        for after in afters:
            wanted = [event for event in expected if event.position > after]
            assert list(reader.events(after=after)) == wanted, f"after {after}"


def etcd_state(etcd: EtcdServer, prefix: bytes, revision: int) -> list[Event]:
    """etcd's own range of ``prefix`` at ``revision``, as the snapshot entries a mirror
    reader gives."""
    with etcd.client() as client:
        response = client.kvstub.Range(
            etcdrpc.RangeRequest(key=prefix, range_end=prefix_range(prefix)[1], revision=revision),
            timeout=10,
        )
    return [
        Event(
            revision=revision,
            index=number,
            type=EventType.PUT,
            op=Op.SNAPSHOT,
            key=kv.key,
            value=kv.value,
            mod_revision=kv.mod_revision,
            create_revision=kv.create_revision,
            version=kv.version,
            lease=kv.lease,
        )
        for number, kv in enumerate(response.kvs, 1)
    ]


def test_the_mirror_reader_gives_etcds_state_at_its_revision(
    written: Written, etcd: EtcdServer
) -> None:
    with mirror_reader(written.database.dsn) as reader:
        revision = reader.revision()
        items = list(reader.items())
    with mirror_reader(written.database.dsn) as reader:
        reader.page_rows = 3
        paged = list(reader.items())
    assert revision == written.last
    expected = etcd_state(etcd, written.prefix, revision)
    assert items == expected
    assert paged == expected
    keys = [item.key for item in items]
    assert keys == sorted(keys)
    assert any(key.endswith(b"\xff\x00odd") for key in keys)


def test_the_mirror_reader_keeps_to_its_snapshot_while_the_table_changes(
    written: Written,
) -> None:
    database = written.database
    with mirror_reader(database.dsn) as reader:
        revision = reader.revision()
        before = list(reader.items())
        first = before[0]
        change_mirror(database, key=first.key, value=b"changed", revision=revision + 1)
        try:
            assert reader.revision() == revision
            assert list(reader.items()) == before
            with mirror_reader(database.dsn) as fresh:
                assert fresh.revision() == revision + 1
                assert next(fresh.items()).value == b"changed"
        finally:
            assert first.value is not None
            change_mirror(database, key=first.key, value=first.value, revision=revision)


def change_mirror(database: PostgresDatabase, *, key: bytes, value: bytes, revision: int) -> None:
    """Commit a new value of ``key`` in the mirror and a new consistent revision."""
    with database.connect() as connection:
        connection.execute(
            "UPDATE etcd_bridge_mirror SET value = %s WHERE pipeline = %s AND key = %s",
            (value, MIRROR, key),
        )
        connection.execute(
            "UPDATE etcd_bridge_positions SET consistent_revision = %s WHERE pipeline = %s",
            (revision, MIRROR),
        )


def test_a_row_deleted_from_the_changelog_is_missing_from_what_the_reader_yields(
    written: Written,
) -> None:
    expected = sql_events(written.database)
    victim = expected[len(expected) // 3]
    with written.database.connect() as connection:
        connection.execute(
            "DELETE FROM etcd_bridge_changelog "
            "WHERE pipeline = %s AND revision = %s AND index = %s",
            (CHANGELOG, victim.revision, victim.index),
        )
    kept = [event for event in expected if event is not victim]
    with changelog_reader(written.database.dsn) as reader:
        assert list(reader.events()) == kept
    assert sql_events(written.database) == kept


def test_a_reader_needs_only_select_and_creates_nothing(written: Written) -> None:
    database = written.database
    role = database.add_role(
        "GRANT SELECT ON etcd_bridge_changelog, etcd_bridge_mirror, etcd_bridge_positions TO {role}"
    )
    with changelog_reader(database.dsn_as(role)) as reader:
        assert list(reader.events()) == sql_events(database)
    with mirror_reader(database.dsn_as(role)) as reader:
        assert reader.revision() == written.last
        assert len(list(reader.items())) > 0
    with changelog_reader(database.dsn, table_prefix="absent_") as reader:
        assert list(reader.events()) == []
    with mirror_reader(database.dsn, table_prefix="absent_") as reader:
        assert reader.revision() == 0
        assert list(reader.items()) == []
    with database.connect() as connection:
        for suffix in ("changelog", "mirror", "staging", "positions"):
            assert not exists(connection, f"absent_{suffix}")


def test_an_unreachable_server_and_an_unknown_role_are_one_line_naming_the_setting(
    written: Written,
) -> None:
    port = free_port()
    with changelog_reader(f"postgresql://postgres@127.0.0.1:{port}/postgres") as reader:
        with pytest.raises(SinkUnavailableError) as unreachable:
            list(reader.events())
    message = str(unreachable.value)
    assert f"127.0.0.1:{port}" in message and "unreachable" in message and "\n" not in message
    secret = f"secret-{uuid.uuid4().hex[:6]}"
    dsn = written.database.dsn_as("nobody_here", password=secret)
    with mirror_reader(dsn) as reader:
        with pytest.raises(SinkRejectedError) as refused:
            reader.revision()
    message = str(refused.value)
    assert "login as 'nobody_here' refused" in message and "BRIDGE_POSTGRES__DSN" in message
    assert secret not in message and "\n" not in message
