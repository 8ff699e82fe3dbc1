"""What every sink's module under ``tests/sinks`` provides: a ``Destination``.

A destination is one fresh place one sink writes to (a file, a Redis stream, a Kafka topic),
on a server of its kind, for a run of the *real* bridge process: the chaos suite, the data
shape tests and the benchmarks. It says what the bridge needs to write there (``env``, its
``BRIDGE_<NAME>__*`` variables) and reads the place back by the test's own means, never
through the bridge: everything (``streams``, counting what is malformed instead of raising,
or ``events``, asserting), or only the durable tail, cheaply enough to poll (``tail``). A
benchmark follows it with a ``SinkReader`` built in another process from ``config()``, so a
destination is a dataclass of plain values.

A benchmark may also compare the bridge with the sink's client library on its own
(``bare``): a ``BareClient`` reads back the records a bridge wrote into one destination
(untimed) and writes the same records into a fresh one the way a plain program using that
library would, so that the bridge's rate reads as a share of what the client and server allow.

The contract kit's ``SinkHarness`` (bridge.contract) is the in-process counterpart: it drives
sink instances directly; ``build`` makes one the way the bridge does, for both.
"""

import abc
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import orjson

import bridge.errors
import bridge.reader
from bridge import plugins
from bridge.events import Event
from bridge.sink import Sink
from config.keyspace import KeySpace
from config.settings import load_section
from tests.fixtures.processes import ManagedProcess

Flaw = Callable[[str], None]
"""Told about each malformed thing a reader finds (a torn line, a record out of place)."""


class SinkServer(Protocol):
    """A sink's server process as the tests' fixtures run it."""

    process: ManagedProcess

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Progress:
    """What a sink holds so far: every record (markers included), and the last one's position."""

    records: int = 0
    last_revision: int = 0
    last_op: str = ""


@dataclass(frozen=True)
class RawRecord:
    """One record as the sink holds it, not decoded: what a format's own consumer reads."""

    value: bytes | None
    key: bytes | None = None
    headers: Mapping[str, bytes] = dataclasses.field(default_factory=dict)


Seen = tuple[int, str]
"""A record read back from a sink: its event's revision and op."""

_DEBEZIUM_OPS = {"c": "create", "u": "update", "d": "delete", "r": "snapshot"}


def seen_in(record: bytes) -> Seen:
    """The revision and op of one record in any format (docs/formats.md), cheaply, without
    knowing which: what a benchmark's reader notes of a line."""
    document = orjson.loads(record)
    if "schema" in document and "payload" in document:
        document = document["payload"]
    if "specversion" in document:  # CloudEvents (whose ``source`` is a string)
        return int(document["revision"]), str(document["type"]).rsplit(".", 1)[1]
    if "source" in document:  # Debezium
        op = document["op"]
        if op == "m":
            return int(document["source"]["revision"]), str(document["message"]["content"]["op"])
        return int(document["source"]["revision"]), _DEBEZIUM_OPS[op]
    return int(document["revision"]), str(document["op"])


class SinkReader(Protocol):
    """Reads a sink back for a benchmark. Use either ``progress`` or ``follow`` on one reader,
    not both."""

    def progress(self) -> Progress:
        """Everything the sink holds now, counted (cheaply)."""
        ...

    def follow(self, *, timeout: float) -> list[Seen]:
        """The records that became visible since the last call, waiting up to ``timeout``."""
        ...

    def close(self) -> None: ...


class BareClient(Protocol):
    """A sink's client library on its own, copying what a bridge wrote: the records of a
    source destination, read back as the sink stored them, written into a fresh destination
    batch by batch, each batch held durably (acknowledged, committed) before the next."""

    def batches(self, size: int) -> Iterator[Sequence[Any]]:
        """The source's records, at most ``size`` at a time, in the order it holds them, ready
        to be written (anything the copy needs rewritten is done here, outside the timing)."""
        ...

    def write(self, batch: Sequence[Any]) -> None:
        """Write ``batch`` into the destination; return once the server holds all of it."""
        ...

    def close(self) -> None: ...


def build(
    name: str, *, pipeline: str, keyspace: KeySpace, ha: bool = False, **settings: Any
) -> Sink:
    """The sink registered as ``name``, built as the bridge builds it: its settings section
    validated from ``settings`` (as if from ``BRIDGE_<NAME>__*``), then ``from_settings``
    (``ha``: as with ``BRIDGE_HA__ENABLED``)."""
    section = load_section(name, plugins.settings_model(plugins.load(name)), **settings)
    return plugins.build_sink(name, section, pipeline=pipeline, keyspace=keyspace, ha=ha)


def build_reader(
    name: str, *, pipeline: str, keyspace: KeySpace, **settings: Any
) -> bridge.reader.SinkReader:
    """The product's reader of what the sink registered as ``name`` holds, built from
    ``settings`` as ``build`` builds the sink (``plugins.build_reader``)."""
    section = load_section(name, plugins.settings_model(plugins.load(name)), **settings)
    return plugins.build_reader(name, section, pipeline=pipeline, keyspace=keyspace)


def refuse(text: str) -> None:
    """The ``Flaw`` of a strict reader: anything malformed fails the test."""
    raise AssertionError(text)


@dataclass
class Destination(abc.ABC):
    """One fresh place of one sink; subclasses are dataclasses of plain values."""

    name: ClassVar[str]
    """The sink's entry-point name, as ``BRIDGE_SINKS`` and ``BRIDGE_<NAME>__*`` spell it."""
    independent: ClassVar[bool] = False
    """Whether checks read this sink with the tests' own reader (``streams``) rather than the
    product's (``bridge.reader``): one sink at least stays checked by code that shares
    nothing with the product, so that a bug common to a sink and its reader still shows."""
    tail_creates: ClassVar[bool] = False
    """Whether reading the tail may create the destination (then poll it once the bridge
    has shown it runs, by another sink's tail)."""
    restartable: ClassVar[bool] = False
    """Whether its server keeps what it holds across a restart (the chaos restarts it)."""
    impatient: ClassVar[Mapping[str, str]] = {}
    """Settings under which the sink notices a paused or killed server within seconds."""
    large_values: ClassVar[Mapping[str, str]] = {}
    """Settings the sink needs for events carrying 1 MiB twice (value and previous value)."""
    bare_client: ClassVar[str] = ""
    """How ``bare`` writes, as a benchmark's table names it (``nats-py publish_async``); empty
    when the sink has no bare-client baseline."""

    @classmethod
    def server(cls, workdir: Path, *, persistent: bool) -> SinkServer | None:
        """A server (not started) keeping its data in ``workdir``, on disk if ``persistent``;
        None for a sink that needs none."""
        return None

    @classmethod
    @abc.abstractmethod
    def fresh(cls, server: SinkServer | None, *, directory: Path, tag: str) -> Self:
        """A place named after ``tag`` that nothing else uses, on ``server`` (from ``server``)
        or in ``directory``."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """The destination ``config()`` describes (in another process)."""
        return cls(**{key: value for key, value in config.items() if key != "sink"})

    def config(self) -> dict[str, Any]:
        """This destination as JSON-able values, with its sink's name under ``sink``."""
        fields = dataclasses.fields(self)
        return {"sink": self.name, **{f.name: getattr(self, f.name) for f in fields if f.init}}

    @property
    def marker_records(self) -> int:
        """Records one snapshot marker becomes in the sink: 1, or one per partition."""
        return 1

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """The sink's settings that point it here (field names of its settings model)."""

    def env(self, **tuning: str) -> dict[str, str]:
        """``settings`` and ``tuning`` as the bridge's ``BRIDGE_<NAME>__*`` variables."""
        section = f"BRIDGE_{self.name.upper()}__"
        own = {**self.settings(), **tuning}
        return {section + field.upper(): str(value) for field, value in own.items()}

    @abc.abstractmethod
    def streams(self, *, pipeline: str, flaw: Flaw) -> dict[str, list[Event]]:
        """Everything held, as streams each in the order the sink holds it (one, or one per
        partition); whatever is malformed is told to ``flaw`` and left out or kept as read."""

    def read_back(self, *, pipeline: str, keyspace: KeySpace, flaw: Flaw) -> dict[str, list[Event]]:
        """What the sink holds, as the checks read it: through the product's reader, as
        ``etcd-bridge verify`` does (one stream in position order), unless ``independent``;
        a record the reader cannot decode is told to ``flaw`` and ends the stream there."""
        if self.independent:
            return self.streams(pipeline=pipeline, flaw=flaw)
        events: list[Event] = []
        with build_reader(
            self.name, pipeline=pipeline, keyspace=keyspace, **self.settings()
        ) as reader:
            assert isinstance(reader, bridge.reader.StreamReader), f"{self.name}: not a stream"
            try:
                events.extend(reader.events())
            except bridge.errors.BridgeError as error:
                flaw(f"{self.name}: {error}")
        return {"reader": events}

    def records(self, *, pipeline: str) -> dict[str, list[RawRecord]]:
        """Everything held, undecoded, as streams each in the order the sink holds it (one,
        or one per partition); for sinks that write records in a format (docs/formats.md)."""
        raise NotImplementedError(f"the {self.name} sink holds rows or state, not records")

    def events(self, *, pipeline: str) -> list[Event]:
        """Everything held, as one stream in the sink's order; anything malformed fails."""
        [stream] = self.streams(pipeline=pipeline, flaw=refuse).values()
        return stream

    @abc.abstractmethod
    def tail(self, *, pipeline: str, prefix: bytes) -> Event | None:
        """The last event the sink durably holds for ``pipeline``, cheaply enough to poll."""

    def held(self, *, revision: int, count: int, pipeline: str, prefix: bytes) -> int:
        """How many of the ``count`` events of ``revision`` the sink holds now (polled while
        a bridge delivers that revision)."""
        tail = self.tail(pipeline=pipeline, prefix=prefix)
        if tail is None or tail.revision < revision:
            return 0
        return count if tail.revision > revision else tail.index + 1

    def records_per_delete(self, bridge_env: Mapping[str, str]) -> int:
        """Records one delete event becomes in the sink under ``bridge_env``."""
        return 1

    @abc.abstractmethod
    def reader(self) -> SinkReader:
        """A benchmark's reader of this destination."""

    def bare(self, source: Self, *, pipeline: str, from_revision: int) -> BareClient:
        """A bare client writing into this fresh destination the records ``source`` holds for
        ``pipeline``, from its first event at or after ``from_revision`` on (see
        ``bare_client``)."""
        raise NotImplementedError(f"the {self.name} sink has no bare-client baseline")

    def close(self) -> None:  # noqa: B027 - optional hook; most destinations hold nothing
        """Release what reading opened (never the server)."""
