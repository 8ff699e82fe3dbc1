"""The contract between a sink and the shape of its records.

A format turns an event into the bytes of one record and, for the sinks that read their
durable tail back from their own data (the file's last line, the stream's last entry), a
record back into an event. The sink stays in charge of where records go and how they are made
durable; the format only says what a record holds, so that every sink, a third party's
included, offers every format the same way: it declares them in ``Sink.formats`` and uses
the ``EventFormat`` it is handed in its ``SinkContext``.

Two helpers serve the formats that build records for speed (Debezium): ``MillisecondClock``
derives what a record needs from the clock (``ts_ms``) once per millisecond, and
``json_members`` serializes constant parts of a record once, for a format to splice them in
(as ``orjson.Fragment``) rather than have orjson serialize them again for every record.
"""

import abc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import orjson

from bridge.events import Event
from config.keyspace import KeySpace
from config.output import FormatName, ValuesMode


@dataclass(frozen=True, slots=True)
class FormatContext:
    """What a format may name in its records besides the event."""

    pipeline: str
    """``BRIDGE_NAME``: in record ids and Debezium's ``source.name``."""
    cluster: str
    """``BRIDGE_CLUSTER``: the logical name of the etcd cluster."""
    keyspace: KeySpace
    """The watched prefixes: in CloudEvents' ``source`` and Debezium's ``source.prefix``."""
    values: ValuesMode = ValuesMode.BYTES
    """How values are embedded (``bridge.formats.values``)."""


class EventFormat(abc.ABC):
    """How an event becomes one record; see the module docstring."""

    name: ClassVar[FormatName]
    """Formats are built as ``FormatClass(context, output)`` by ``bridge.formats.build_format``
    (``output``: the sink's ``OutputSettings``, for the format's own options)."""
    content_type: ClassVar[str] = "application/json"
    """The media type of ``encode``'s output."""
    has_binary_mode: ClassVar[bool] = False
    """Whether ``binary`` differs from a keyed record's value (CloudEvents' binary content
    mode, where attributes travel as headers)."""

    @abc.abstractmethod
    def encode(self, event: Event) -> bytes:
        """The record of ``event`` as one JSON document without a newline: what the file,
        stdout, Redis and NATS sinks write, and the Kafka sink unless it says otherwise."""

    @abc.abstractmethod
    def decode(self, record: bytes) -> Event:
        """The event ``encode`` made ``record`` of, as far as a sink reading its tail back
        needs it: position, op, key and snapshot reason always, exactly; values as the format
        carries them (bytes exact with ``values=bytes``). ValueError if ``record`` is not a
        record of this format."""

    def encode_batch(self, batch: Sequence[Event]) -> list[bytes]:
        """``encode`` of each event, in batch order: what the sinks that send one record per
        event (Redis, NATS) call once per batch, so that a format may do once per batch what
        ``encode`` does per record (read the clock, look its parts up). A record's time is
        then when its batch was encoded."""
        return list(map(self.encode, batch))

    def encode_lines(self, batch: Sequence[Event]) -> bytes:
        """One record per event, each ending in a newline, in batch order (JSON lines)."""
        encode = self.encode
        return b"".join([encode(event) + b"\n" for event in batch])

    def record_key(self, event: Event) -> bytes:
        """The key of a keyed record (a Kafka record key): the etcd key unless the format's
        consumers expect another shape."""
        return event.key

    def record_value(self, event: Event) -> bytes | None:
        """The value of a keyed record: ``encode(event)``, or None where the format's
        consumers expect a record they skip (a Debezium marker: Flink and RisingWave skip a
        null value as they skip a tombstone). Only sinks whose records carry headers beside
        the value use it, since the marker then travels in the headers."""
        return self.encode(event)

    def binary(self, event: Event) -> tuple[list[tuple[str, bytes]], bytes | None]:
        """The record in a binary content mode: headers carrying the format's attributes, and
        the value. Formats without one (``has_binary_mode`` False) have no headers to add."""
        return [], self.record_value(event)

    def record_values(self, batch: Sequence[Event]) -> Sequence[bytes | None]:
        """``record_value`` of each event, in batch order: what a keyed sink (Kafka) calls once
        per batch, as ``encode_batch`` for the others, so that a format may do once per batch
        what ``record_value`` does per record."""
        return list(map(self.record_value, batch))

    def binary_batch(
        self, batch: Sequence[Event]
    ) -> Sequence[tuple[list[tuple[str, bytes]], bytes | None]]:
        """``binary`` of each event, in batch order (see ``record_values``)."""
        return list(map(self.binary, batch))


Derived = TypeVar("Derived")


class MillisecondClock(Generic[Derived]):
    """The wall clock in milliseconds, with what a format derives from it (a formatted time,
    a pre-serialized fragment): derived once per millisecond, since records made within one
    share it and deriving it costs more than a record's other parts. ``now`` hands the
    millisecond and its value as one tuple, read and replaced whole, so a thread never pairs
    one millisecond with another's value."""

    __slots__ = ("_current", "_derive")

    def __init__(self, derive: Callable[[int], Derived]) -> None:
        self._derive = derive
        self._current = (-1, derive(0))

    def now(self) -> tuple[int, Derived]:
        millisecond = time.time_ns() // 1_000_000
        current = self._current
        if current[0] != millisecond:
            current = self._current = (millisecond, self._derive(millisecond))
        return current


def json_members(members: dict[str, Any]) -> bytes:
    """``members`` as the inside of a JSON object, exactly as orjson writes it within one:
    ``"a":1,"b":"x"``, without braces, to splice into a record."""
    return orjson.dumps(members)[1:-1]
