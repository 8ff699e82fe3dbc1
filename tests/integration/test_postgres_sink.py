"""The PostgreSQL sink against a real PostgreSQL 15, driven directly (no etcd, no pump).

A ``History`` stands in for etcd and produces the events the pump would hand over; each test
checks what a consumer reads back with SQL (the changelog's rows, the mirror's rows) and what
a fresh sink's ``open()`` reports, since that is the whole of exactly once: the tail read back
is the last event written, and nothing at or below it is ever added again. Every test has a
database of its own (``postgres_database``); the tests that pause, kill or password-protect
the server start their own (``postgres_factory``).
"""

import re
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bridge.contract import History, after, deliver_with_retries, feed
from bridge.errors import SinkRejectedError, SinkUnavailableError
from bridge.events import Event, Op, SnapshotReason
from bridge.sink import Sink
from config.keyspace import KeySpace
from tests.fixtures.postgres import (
    BINARIES,
    PostgresDatabase,
    PostgresFactory,
    changelog_events,
    mirror_state,
)
from tests.fixtures.processes import free_port, wait_for
from tests.sinks.base import build

PREFIX = b"/app/"
PIPELINE = "default"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "postgres.md"
RIGHT_PASSWORD = "right-one"  # noqa: S105 - a test server's password
WRONG_PASSWORD = "wrong-one"  # noqa: S105 - must never show in a message


def make_sink(dsn: str, *, pipeline: str = PIPELINE, ha: bool = False, **settings: Any) -> Sink:
    keyspace = KeySpace.of([PREFIX])
    return build("postgres", pipeline=pipeline, keyspace=keyspace, ha=ha, dsn=dsn, **settings)


def deliver(sink: Sink, events: Sequence[Event], *, size: int = 50) -> None:
    feed(sink, events, sizes=(size,))


def deliver_and_reopen(
    dsn: str, events: Sequence[Event], *, size: int = 50, **settings: Any
) -> None:
    """``events`` through a new sink, which must find nothing; then a second new sink must
    read the last of them back as its tail: what the bridge relies on after a restart."""
    with make_sink(dsn, **settings) as sink:
        assert sink.open() is None
        deliver(sink, events, size=size)
    with make_sink(dsn, **settings) as fresh:
        assert fresh.open() == events[-1]


def changelog(database: PostgresDatabase, *, pipeline: str = PIPELINE) -> list[Event]:
    """The changelog's rows of ``pipeline`` in position order, as events (``more`` too)."""
    with database.connect() as connection:
        return changelog_events(connection, pipeline=pipeline)


def assert_changelog_is(database: PostgresDatabase, events: Sequence[Event]) -> None:
    held = changelog(database)
    assert held == list(events)
    assert [event.more for event in held] == [event.more for event in events]


def mirror(database: PostgresDatabase, *, pipeline: str = PIPELINE) -> dict[bytes, bytes]:
    with database.connect() as connection:
        return mirror_state(connection, pipeline=pipeline)


def consistent_revision(database: PostgresDatabase) -> int | None:
    with database.connect() as connection:
        row = connection.execute(
            "SELECT consistent_revision FROM etcd_bridge_positions WHERE pipeline = %s "
            "AND mode = 'mirror'",
            (PIPELINE,),
        ).fetchone()
    return None if row is None else row[0]  # type: ignore[return-value]


def seeded_history(keys: int = 20) -> History:
    history = History(prefix=PREFIX, revision=1)
    history.seed(keys)
    return history


def mixed_events(history: History) -> list[Event]:
    """A snapshot, then puts, updates, deletes, multi-key transactions, binary and JSON."""
    events = history.snapshot()
    events += history.put(PREFIX + b"a", b"1")
    events += history.put(PREFIX + b"a", b'{"port": 80}')
    events += history.delete(PREFIX + b"seed/000")
    events += history.txn([(PREFIX + b"t1", b"x"), (PREFIX + b"t2", b"y"), (PREFIX + b"a", None)])
    events += history.put(PREFIX + "ключ".encode(), b"\xff\x00binary")
    events += history.put(PREFIX + b"\xfe\x00raw", b"nul\x00inside")
    events += history.random_changes(count=200, seed=7)
    return events


class TestChangelog:
    def test_an_empty_database_has_no_tail_and_gets_its_tables(
        self, postgres_database: PostgresDatabase
    ) -> None:
        with make_sink(postgres_database.dsn) as sink:
            assert sink.open() is None
        with postgres_database.connect() as connection:
            tables = connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            ).fetchall()
        assert tables == [("etcd_bridge_changelog",), ("etcd_bridge_positions",)]

    def test_rows_are_the_events_and_a_reopen_reads_the_tail(
        self, postgres_database: PostgresDatabase
    ) -> None:
        events = mixed_events(seeded_history())
        deliver_and_reopen(postgres_database.dsn, events, size=37)
        assert_changelog_is(postgres_database, events)

    def test_a_replayed_or_overlapping_batch_adds_nothing_twice(
        self, postgres_database: PostgresDatabase
    ) -> None:
        events = mixed_events(seeded_history())
        first = events[:100]
        with make_sink(postgres_database.dsn) as sink:
            sink.open()
            deliver(sink, first)
        with make_sink(postgres_database.dsn) as sink:
            assert sink.open() == first[-1]
            deliver(sink, first)  # a whole replay
            sink.write(events[80:130])  # overlapping the tail
            sink.flush()
            deliver(sink, after(events, events[129]))
        assert_changelog_is(postgres_database, events)

    def test_two_writers_of_one_pipeline_take_turns_and_skip_each_other(
        self, postgres_database: PostgresDatabase
    ) -> None:
        """With HA, an old instance resuming after a pause writes what a new one already
        wrote (without HA the second one would be refused: ``test_postgres_owner``)."""
        events = mixed_events(seeded_history())
        dsn = postgres_database.dsn
        with make_sink(dsn, ha=True) as old, make_sink(dsn, ha=True) as new:
            assert old.open() is None
            assert new.open() is None
            deliver(new, events[:150])
            deliver(old, events[:120])  # everything at or below the tail: skipped
            deliver(old, events[120:])
            deliver(new, events[150:])
        assert_changelog_is(postgres_database, events)

    def test_pipelines_share_the_tables_without_sharing_positions(
        self, postgres_database: PostgresDatabase
    ) -> None:
        events = History(prefix=PREFIX).random_changes(count=20, seed=2)
        with make_sink(postgres_database.dsn) as sink:
            sink.open()
            deliver(sink, events)
        with make_sink(postgres_database.dsn, pipeline="other") as sink:
            assert sink.open() is None
            deliver(sink, events[:5])
        assert changelog(postgres_database, pipeline="other") == events[:5]
        assert_changelog_is(postgres_database, events)

    def test_binary_keys_and_values_are_exact_with_text_and_json_views(
        self, postgres_database: PostgresDatabase
    ) -> None:
        history = History(prefix=PREFIX)
        events = history.put(PREFIX + b"json", b'{"a": [1, 2]}')
        events += history.put(PREFIX + b"json", b"plain text")
        events += history.put(PREFIX + b"\xff\xfe", b"\x00\x01\x02")
        events += history.put(PREFIX + b"nul-json", b'"\\u0000"')
        events += history.put(PREFIX + b"empty", b"")
        deliver_and_reopen(postgres_database.dsn, events)
        assert_changelog_is(postgres_database, events)
        with postgres_database.connect() as connection:
            views = connection.execute(
                "SELECT key_text, value_text, value_json, prev_value_text, prev_value_json "
                "FROM etcd_bridge_changelog ORDER BY revision, index"
            ).fetchall()
        assert views == [
            ("/app/json", '{"a": [1, 2]}', {"a": [1, 2]}, None, None),
            ("/app/json", "plain text", None, '{"a": [1, 2]}', {"a": [1, 2]}),
            (None, None, None, None, None),  # not UTF-8; NUL bytes: no text
            ("/app/nul-json", '"\\u0000"', None, None, None),  # JSON that jsonb refuses
            ("/app/empty", "", None, None, None),
        ]

    def test_the_documented_query_reads_a_key_at_a_revision(
        self, postgres_database: PostgresDatabase
    ) -> None:
        """docs/postgres.md's changelog query, run as written with psql."""
        history = History(prefix=b"/app/config/")
        key = b"/app/config/x"
        history.put(key, b"before the bridge")
        events = history.snapshot()
        first = history.revision
        events += history.put(key, b"second")
        second = history.revision
        events += history.delete(key)
        gone = history.revision
        events += history.put(key, b"third")
        third = history.revision
        history.delete(key)  # lost to a compaction: the resync snapshot no longer has x
        events += history.snapshot(reason=SnapshotReason.COMPACTED)
        resynced = history.revision
        with make_sink(postgres_database.dsn) as sink:
            sink.open()
            deliver(sink, events, size=3)
        query = documented_sql("at revision R")
        for revision, expected in [
            (first - 1, ""),
            (first, "before the bridge"),
            (second, "second"),
            (gone, ""),
            (third, "third"),
            (resynced, ""),
        ]:
            assert psql(postgres_database, query, key="/app/config/x", revision=revision) == (
                expected
            ), revision


class TestMirror:
    settings = {"mode": "mirror"}

    def test_the_mirror_equals_the_prefix_through_snapshot_changes_and_resync(
        self, postgres_database: PostgresDatabase
    ) -> None:
        history = seeded_history()
        events = mixed_events(history)
        deliver_and_reopen(postgres_database.dsn, events, size=23, **self.settings)
        assert mirror(postgres_database) == history.values()
        assert consistent_revision(postgres_database) == history.revision
        with postgres_database.connect() as connection:
            found = connection.execute(
                "SELECT key, mod_revision, create_revision, version FROM etcd_bridge_mirror"
            ).fetchall()
        assert {bytes(k): tuple(rest) for k, *rest in found} == {  # type: ignore[arg-type]
            key: (entry.mod_revision, entry.create_revision, entry.version)
            for key, entry in history.state.items()
        }

    def test_a_revision_split_across_flushes_and_a_restart_is_applied_whole(
        self, postgres_database: PostgresDatabase
    ) -> None:
        history = History(prefix=PREFIX)
        keys = [PREFIX + f"k{number}".encode() for number in range(10)]
        start = history.snapshot() + history.txn([(key, b"old") for key in keys])
        big = history.txn(
            [(key, None if number % 2 else b"new") for number, key in enumerate(keys)]
        )
        assert [event.more for event in big] == [True] * 9 + [False]
        dsn = postgres_database.dsn
        with make_sink(dsn, **self.settings) as sink:
            sink.open()
            deliver(sink, start)
            before = mirror(postgres_database)
            revision = consistent_revision(postgres_database)
            deliver(sink, big[:4], size=2)  # two transactions, both inside the revision
            assert mirror(postgres_database) == before
        with make_sink(dsn, **self.settings) as sink:
            assert sink.open() == big[3]  # a restart inside the revision
            assert mirror(postgres_database) == before
            deliver(sink, big[2:8])  # replays its first part, stages more
            assert mirror(postgres_database) == before
            assert consistent_revision(postgres_database) == revision
            deliver(sink, big[8:])
        assert mirror(postgres_database) == history.values()
        assert consistent_revision(postgres_database) == history.revision
        with postgres_database.connect() as connection:
            assert connection.execute("SELECT count(*) FROM etcd_bridge_staging").fetchone() == (0,)

    def test_a_resync_snapshot_replaces_the_mirror_atomically(
        self, postgres_database: PostgresDatabase
    ) -> None:
        history = seeded_history()
        dsn = postgres_database.dsn
        with make_sink(dsn, **self.settings) as sink:
            sink.open()
            deliver(sink, mixed_events(history), size=23)
        old = history.values()
        assert mirror(postgres_database) == old
        # A gap the bridge never saw (compaction), with deletes and creates, then a resync.
        history.random_changes(count=100, seed=99)
        history.delete(PREFIX + b"seed/001")
        resync = history.snapshot(reason=SnapshotReason.COMPACTED)
        later = history.random_changes(count=100, seed=100)
        half = resync[: len(resync) // 2]
        with make_sink(dsn, **self.settings) as sink:
            sink.open()
            deliver(sink, half, size=7)
            assert mirror(postgres_database) == old  # readers still see the old, whole mirror
        with make_sink(dsn, **self.settings) as sink:
            assert sink.open() == half[-1]
            deliver(sink, after(resync, half[-1]), size=7)
            assert mirror(postgres_database) == dict(
                (event.key, event.value) for event in resync if event.op is Op.SNAPSHOT
            )
            assert PREFIX + b"seed/001" not in mirror(postgres_database)
            deliver(sink, later, size=7)
        assert mirror(postgres_database) == history.values()

    def test_an_empty_snapshot_empties_the_mirror(
        self, postgres_database: PostgresDatabase
    ) -> None:
        history = History(prefix=PREFIX)
        events = history.put(PREFIX + b"k", b"v") + history.delete(PREFIX + b"k")
        with make_sink(postgres_database.dsn, **self.settings) as sink:
            sink.open()
            deliver(sink, History(prefix=PREFIX).put(PREFIX + b"stale", b"v"))
            assert mirror(postgres_database) == {PREFIX + b"stale": b"v"}
            history.revision = 10
            deliver(sink, events[1:] + history.snapshot(reason=SnapshotReason.COMPACTED))
        assert mirror(postgres_database) == {}

    def test_the_documented_join_runs(self, postgres_database: PostgresDatabase) -> None:
        history = History(prefix=PREFIX)
        history.put(PREFIX + b"services/api", b'{"port": 8080, "owner": "team-a"}')
        history.put(PREFIX + b"services/db", b'{"port": 5432, "owner": "team-b"}')
        history.put(PREFIX + b"owners/team-a", b"alice@example.com")
        deliver_and_reopen(postgres_database.dsn, history.snapshot(), **self.settings)
        output = psql(postgres_database, documented_sql("join"))
        assert output.splitlines() == ["/app/services/api|8080|alice@example.com"]


def documented_sql(title: str) -> str:
    """The ```sql block of docs/postgres.md that follows a heading containing ``title``."""
    text = DOCS.read_text()
    match = re.search(
        rf"^#+ [^\n]*{re.escape(title)}[^\n]*\n.*?```sql\n(.*?)```", text, re.M | re.S
    )
    assert match, f"docs/postgres.md has no SQL example under a heading with {title!r}"
    return match.group(1)


def psql(database: PostgresDatabase, query: str, **variables: object) -> str:
    """``query`` run by psql with ``-v name=value`` for each variable; rows as ``a|b``."""
    command = [str(BINARIES / "psql"), database.dsn, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
    for name, value in variables.items():
        command += ["-v", f"{name}={value}"]
    done = subprocess.run(command, input=query, capture_output=True, text=True, check=True)
    return done.stdout.strip()


class TestFailures:
    def test_an_unreachable_server_is_retryable_and_hides_the_password(self) -> None:
        dsn = f"postgresql://app:s3cret@127.0.0.1:{free_port()}/db"
        with make_sink(dsn, connect_timeout=2) as sink:
            with pytest.raises(SinkUnavailableError) as raised:
                sink.open()
        message = str(raised.value)
        assert "\n" not in message
        assert "s3cret" not in message
        assert f"postgresql://app@127.0.0.1:{dsn.split(':')[3].split('/')[0]}/db" in message

    def test_a_wrong_password_is_one_line_naming_the_setting(
        self, postgres_factory: PostgresFactory
    ) -> None:
        server = postgres_factory.start(password=RIGHT_PASSWORD)
        wrong = server.dsn("postgres", password=WRONG_PASSWORD)
        with make_sink(wrong) as sink, pytest.raises(SinkRejectedError) as raised:
            sink.open()
        message = str(raised.value)
        assert "\n" not in message
        assert "login as 'postgres' refused" in message
        assert "password authentication failed" in message
        assert "BRIDGE_POSTGRES__DSN" in message
        assert WRONG_PASSWORD not in message
        # The password setting wins over the DSN's.
        with make_sink(wrong, password=RIGHT_PASSWORD) as sink:
            assert sink.open() is None

    def test_a_role_without_privileges_is_named_with_what_it_lacks(
        self, postgres_database: PostgresDatabase
    ) -> None:
        with make_sink(postgres_database.dsn) as sink:
            sink.open()  # the tables exist, created by the superuser
        role = postgres_database.add_role(
            "GRANT SELECT, INSERT, UPDATE ON etcd_bridge_positions TO {role}"
        )
        with (
            make_sink(postgres_database.dsn_as(role)) as sink,
            pytest.raises(SinkRejectedError) as raised,
        ):
            sink.open()
        message = str(raised.value)
        assert "\n" not in message
        assert f"role '{role}' lacks INSERT on public.etcd_bridge_changelog" in message
        assert f"GRANT INSERT ON public.etcd_bridge_changelog TO {role}" in message

    def test_a_role_that_may_not_create_the_tables_is_told_so(
        self, postgres_database: PostgresDatabase
    ) -> None:
        role = postgres_database.add_role()  # PostgreSQL 15: no CREATE on schema public
        with (
            make_sink(postgres_database.dsn_as(role), mode="mirror") as sink,
            pytest.raises(SinkRejectedError, match="may not create it .CREATE on schema public"),
        ):
            sink.open()

    def test_the_least_privileges_of_the_docs_are_enough(
        self, postgres_database: PostgresDatabase
    ) -> None:
        for mode in ("changelog", "mirror"):
            with make_sink(postgres_database.dsn, mode=mode) as sink:
                sink.open()
        grants = re.findall(r"^GRANT .*;$", DOCS.read_text(), re.M)
        assert len(grants) >= 3
        role = postgres_database.add_role(
            *(g.rstrip(";").replace("<role>", "{role}") for g in grants)
        )
        events = mixed_events(seeded_history())
        for mode in ("changelog", "mirror"):
            deliver_and_reopen(postgres_database.dsn_as(role), events, mode=mode)

    def test_a_privilege_revoked_while_running_stops_the_sink(
        self, postgres_database: PostgresDatabase
    ) -> None:
        events = History(prefix=PREFIX).random_changes(count=30, seed=4)
        role = postgres_database.add_role(
            "GRANT CREATE ON SCHEMA public TO {role}",
        )
        with make_sink(postgres_database.dsn_as(role)) as sink:
            sink.open()
            deliver(sink, events[:10])
            with postgres_database.connect() as connection:
                connection.execute(f"REVOKE INSERT ON etcd_bridge_changelog FROM {role}")
            sink.write(events[10:])
            with pytest.raises(SinkRejectedError, match="permission denied for table") as raised:
                sink.flush()
        assert f"{events[10].position}..{events[-1].position}" in str(raised.value)
        assert changelog(postgres_database) == events[:10]

    def test_a_table_of_another_shape_is_refused_naming_the_setting(
        self, postgres_database: PostgresDatabase
    ) -> None:
        with postgres_database.connect() as connection:
            connection.execute("CREATE TABLE etcd_bridge_changelog (id int)")
        with (
            make_sink(postgres_database.dsn) as sink,
            pytest.raises(SinkRejectedError, match="not etcd-bridge's.*TABLE_PREFIX"),
        ):
            sink.open()

    def test_a_column_of_another_type_is_refused_naming_it(
        self, postgres_database: PostgresDatabase
    ) -> None:
        """Rows go out in binary COPY format, which only the documented types read."""
        with make_sink(postgres_database.dsn) as sink:
            sink.open()
        with postgres_database.connect() as connection:
            connection.execute("ALTER TABLE etcd_bridge_changelog ALTER COLUMN index TYPE bigint")
        with (
            make_sink(postgres_database.dsn) as sink,
            pytest.raises(
                SinkRejectedError,
                match="column index of table public.etcd_bridge_changelog is "
                "bigint, not integer.*TABLE_PREFIX",
            ),
        ):
            sink.open()

    def test_schema_and_prefix_place_the_tables(self, postgres_database: PostgresDatabase) -> None:
        events = mixed_events(seeded_history())
        deliver_and_reopen(
            postgres_database.dsn, events, schema_name="etcd", table_prefix="cfg_", mode="mirror"
        )
        with postgres_database.connect() as connection:
            tables = connection.execute(
                "SELECT schemaname || '.' || tablename FROM pg_tables "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
            ).fetchall()
        assert tables == [("etcd.cfg_mirror",), ("etcd.cfg_positions",), ("etcd.cfg_staging",)]


def durable_count(dsn: str, events: list[Event], **settings: Any) -> int:
    """How many of ``events`` are durable: what a fresh sink's ``peek()`` says (``open()``
    would claim the pipeline the running writer holds)."""
    with make_sink(dsn, **settings) as sink:
        tail = sink.peek()
    if tail is None:
        return 0
    return next(n for n, event in enumerate(events, 1) if event.position == tail.position)


def check_exactly_once(dsn: str, mode: str, history: History, events: list[Event]) -> None:
    with psycopg.connect(dsn) as connection:
        if mode == "changelog":
            found = connection.execute(
                "SELECT revision, index FROM etcd_bridge_changelog ORDER BY revision, index"
            ).fetchall()
            assert found == [(event.revision, event.index) for event in events]
        else:
            rows = connection.execute("SELECT key, value FROM etcd_bridge_mirror").fetchall()
            assert {bytes(k): bytes(v) for k, v in rows} == history.values()
    with make_sink(dsn, mode=mode) as sink:
        assert sink.open() == events[-1]


class Interruption:
    """A writer thread delivering thousands of events to a dedicated server, in small
    batches, while the test interrupts the server once it holds a quarter of them."""

    def __init__(self, factory: PostgresFactory, *, mode: str) -> None:
        self.server = factory.start()
        self.dsn = self.server.dsn("postgres")
        self.mode = mode
        self.history = seeded_history(keys=200)
        self.events = self.history.snapshot()
        self.events += self.history.random_changes(count=3000, seed=3, keys=200)
        self.failures: list[str] = []
        self.writer = threading.Thread(
            target=deliver_with_retries,
            args=(
                lambda: make_sink(self.dsn, mode=mode, timeout=1, connect_timeout=1),
                self.events,
            ),
            kwargs={"sizes": (9,), "on_error": lambda error: self.failures.append(str(error))},
            name="postgres-writer",
        )

    def __enter__(self) -> "Interruption":
        self.writer.start()
        wait_for(
            lambda: durable_count(self.dsn, self.events, mode=self.mode) > len(self.events) // 4,
            timeout=30,
            what="a quarter of the events",
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.resume()
        self.writer.join(60)

    def wait_for_failure(self) -> str:
        wait_for(lambda: self.failures, timeout=10, what="the writer to fail")
        return self.failures[0]

    def finish(self) -> None:
        self.writer.join(60)
        assert not self.writer.is_alive(), "the writer did not finish"
        assert durable_count(self.dsn, self.events, mode=self.mode) == len(self.events)
        check_exactly_once(self.dsn, self.mode, self.history, self.events)


@pytest.mark.parametrize("mode", ["changelog", "mirror"])
def test_a_paused_server_times_out_then_resumes_exactly_once(
    postgres_factory: PostgresFactory, mode: str
) -> None:
    with Interruption(postgres_factory, mode=mode) as run:
        run.server.pause()  # SIGSTOP of every process: mid-flush for the busy writer
        failure = run.wait_for_failure()
        assert "did not answer within 1s (BRIDGE_POSTGRES__TIMEOUT)" in failure, failure
        run.server.resume()
        run.finish()


def test_a_server_killed_and_restarted_resumes_exactly_once(
    postgres_factory: PostgresFactory,
) -> None:
    with Interruption(postgres_factory, mode="mirror") as run:
        run.server.kill()
        failure = run.wait_for_failure()
        assert "is unreachable" in failure or "unavailable" in failure, failure
        run.server.start()
        run.finish()
