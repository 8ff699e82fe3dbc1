"""One ``SinkHarness`` per sink: how the contract kit reaches each sink and reads it back.

Every harness but stdout's builds its sink the way the bridge does, by name through the
``etcd_bridge.sinks`` entry points with its own settings section (``tests.sinks.base.build``
on the kit's ``KEYSPACE``), so the sample plug-in is reached exactly like the built-in sinks.
Each reads its destination back by the tests' own means, never through the sink: the file's
complete lines, the captured stdout, the Redis stream by XRANGE or the mirror hash by
HGETALL, the Kafka topic with aiokafka (``tests.fixtures.kafka.topic_events``), the JetStream
stream through a pull consumer of the test's own (``NatsServer.stream_events``), the
PostgreSQL changelog or mirror rows with SQL, the SQLite table with its own connection. Each
destination is new (a directory, stream, topic or pipeline name of its own); the servers are
the session's, and an outage pauses one with SIGSTOP for the span of one ``with``. NATS and
PostgreSQL run on servers the session started for that (``nats_pausable``,
``postgres_pausable``): the machine's own at :4222 and :5432 are not the tests' to pause.

What NATS and PostgreSQL refuse: NATS, a message over the server's ``max_payload`` (1 MB by
default), refused by the sink before it is sent. PostgreSQL refuses nothing the pump can hand
it (``bytea`` and ``text`` hold up to 1 GB, far above etcd's 1.5 MiB request limit; a value
``jsonb`` would refuse, such as ``\\u0000``, is kept without its JSON view), so the rejection
check is not applicable to it.
"""

import contextlib
import dataclasses
import functools
import io
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from bridge.contract import KEYSPACE, SinkHarness, applied_state
from bridge.events import Event
from bridge.sink import Sink
from sinks.stdout.checkpoint import FileCheckpoint
from sinks.stdout.sink import StdoutSink
from tests.fixtures.bridge import read_events
from tests.fixtures.kafka import KafkaBroker, topic_events
from tests.fixtures.nats import NatsServer
from tests.fixtures.postgres import LocalPostgres, changelog_events, mirror_state
from tests.fixtures.redis import RedisServer
from tests.sinks import base

KAFKA_PARTITIONS = 3
OVERSIZE = 1_500_000
"""Bytes of a value every Kafka broker refuses (librdkafka's message.max.bytes is 1 MB), and
nats-server too (its default ``max_payload`` is 1 MB)."""


build = functools.partial(base.build, keyspace=KEYSPACE)
"""``tests.sinks.base.build`` on the kit's key space."""


def unique(kind: str) -> str:
    """A name no other test uses."""
    return f"contract-{kind}-{uuid.uuid4().hex[:10]}"


class Pausable(Protocol):
    """A server process, or a server that owns one."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...


@contextlib.contextmanager
def paused(server: Pausable) -> Iterator[None]:
    """The server frozen (SIGSTOP) inside the block, running again after it."""
    server.pause()
    try:
        yield
    finally:
        server.resume()


class FileHarness(SinkHarness):
    def __init__(self, directory: Path) -> None:
        self.path = directory / "events.jsonl"

    def make_sink(self) -> Sink:
        return build("file", pipeline="contract", path=self.path)

    def delivered(self) -> list[Event]:
        return read_events(self.path)


class StdoutHarness(SinkHarness):
    """The stdout sink writing into a captured stream that outlives its instances, as a
    terminal outlives the bridge's processes; its checkpoint file in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.stream = io.BytesIO()
        self.checkpoint = FileCheckpoint(directory=directory, pipeline="contract", sink="stdout")

    def make_sink(self) -> Sink:
        return StdoutSink(checkpoint=self.checkpoint, stream=self.stream)

    def delivered(self) -> list[Event]:
        return [Event.from_json(line) for line in self.stream.getvalue().splitlines()]


class RedisStreamHarness(SinkHarness):
    """The redis sink in stream mode, on a stream of its own; a 1 s timeout so that a paused
    server fails a flush quickly."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.pipeline = unique("redis")
        self.stream = f"{self.pipeline}:events"

    def settings(self) -> dict[str, Any]:
        return {"url": self.server.url, "stream": self.stream, "timeout": 1.0}

    def make_sink(self) -> Sink:
        return build("redis", pipeline=self.pipeline, **self.settings())

    def delivered(self) -> object:
        return self.server.stream_events(self.stream)

    def outage(self) -> AbstractContextManager[None]:
        return paused(self.server.process)


class RedisMirrorHarness(RedisStreamHarness):
    """The redis sink in mirror mode: what it holds is the mirror hash."""

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "mode": "mirror", "mirror_key": f"{self.pipeline}:mirror"}

    def delivered(self) -> object:
        with self.server.client() as client:
            return client.hgetall(f"{self.pipeline}:mirror")

    def expected(self, events: Sequence[Event]) -> object:
        return applied_state(events)


class KafkaHarness(SinkHarness):
    """The kafka sink on a topic and pipeline of its own; short timeouts so that a paused
    broker fails a flush within a second or two."""

    def __init__(self, broker: KafkaBroker) -> None:
        self.broker = broker
        self.pipeline = unique("kafka")
        self.topic = self.pipeline

    def make_sink(self) -> Sink:
        return build(
            "kafka",
            pipeline=self.pipeline,
            bootstrap_servers=self.broker.bootstrap,
            topic=self.topic,
            partitions=KAFKA_PARTITIONS,
            flush_timeout=1.0,
            timeout=2.0,
            properties={"socket.timeout.ms": "700", "request.timeout.ms": "700"},
        )

    def delivered(self) -> list[Event]:
        return topic_events(
            self.broker.bootstrap, self.topic, partitions=KAFKA_PARTITIONS, pipeline=self.pipeline
        )

    def outage(self) -> AbstractContextManager[None]:
        return paused(self.broker.process)

    def poison(self, event: Event) -> Event:
        return dataclasses.replace(event, value=b"x" * OVERSIZE)


class NatsHarness(SinkHarness):
    """The nats sink on a stream, subject and pipeline of its own on the session's own
    server; 1 s timeouts."""

    def __init__(self, server: NatsServer) -> None:
        self.server = server
        self.pipeline = unique("nats")
        self.stream = self.pipeline

    def make_sink(self) -> Sink:
        return build(
            "nats",
            pipeline=self.pipeline,
            servers=self.server.url,
            stream=self.stream,
            subject=self.pipeline.replace("-", "."),
            timeout=1.0,
            flush_timeout=1.0,
        )

    def delivered(self) -> list[Event]:
        return self.server.stream_events(self.stream)

    def outage(self) -> AbstractContextManager[None]:
        return paused(self.server)

    def poison(self, event: Event) -> Event:
        return dataclasses.replace(event, value=b"x" * OVERSIZE)

    def close(self) -> None:
        self.server.delete_stream(self.stream)


class PostgresChangelogHarness(SinkHarness):
    """The postgres sink in changelog mode, as a pipeline of its own in the tables of a
    server the session started; 1 s timeouts so that a paused server fails a flush quickly."""

    mode = "changelog"

    def __init__(self, server: LocalPostgres) -> None:
        self.server = server
        self.pipeline = unique("postgres")

    def make_sink(self) -> Sink:
        return build(
            "postgres",
            pipeline=self.pipeline,
            dsn=self.server.dsn("postgres"),
            mode=self.mode,
            timeout=1.0,
            connect_timeout=1,
        )

    def delivered(self) -> object:
        with self.server.admin() as connection:
            return changelog_events(connection, pipeline=self.pipeline)

    def outage(self) -> AbstractContextManager[None]:
        return paused(self.server.process)


class PostgresMirrorHarness(PostgresChangelogHarness):
    """The postgres sink in mirror mode: what it holds is the pipeline's mirror rows."""

    mode = "mirror"

    def delivered(self) -> object:
        with self.server.admin() as connection:
            return mirror_state(connection, pipeline=self.pipeline)

    def expected(self, events: Sequence[Event]) -> object:
        return applied_state(events)


class SqliteHarness(SinkHarness):
    """The sample plug-in (tests/plugin_sample), reached only through its entry point. An
    outage is a reader holding the database's write lock past the sink's lock timeout."""

    MAX_VALUE_BYTES = 4096

    def __init__(self, directory: Path) -> None:
        self.path = directory / "events.db"

    def make_sink(self) -> Sink:
        return build(
            "sqlite",
            pipeline="contract",
            path=self.path,
            timeout=0.2,
            max_value_bytes=self.MAX_VALUE_BYTES,
        )

    def delivered(self) -> list[Event]:
        return sqlite_events(self.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with contextlib.closing(sqlite3.connect(self.path, isolation_level=None)) as holder:
            holder.execute("BEGIN EXCLUSIVE")
            try:
                yield
            finally:
                holder.execute("ROLLBACK")

    def outage(self) -> AbstractContextManager[None]:
        return self._locked()

    def poison(self, event: Event) -> Event:
        return dataclasses.replace(event, value=b"x" * (self.MAX_VALUE_BYTES + 1))


def sqlite_events(path: Path) -> list[Event]:
    """Every row of the sample sink's table, in position order, as events."""
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(path)) as reader:
        rows = reader.execute("SELECT event FROM events ORDER BY revision, idx").fetchall()
    return [Event.from_json(event) for (event,) in rows]
