"""The sink's records as Kafka holds them: headers, the rank that orders a partition, the last
record of a partition as read back, and the checkpoint record.

A record is one event: key = the etcd key, value = ``Event.to_json()`` (None for a
tombstone), headers ``revision``, ``index``, ``type``, ``op`` and ``pipeline`` (and a marker's
``reason``). The headers let
the sink read a partition's position back without decoding values, and refuse a topic that
another pipeline (or another producer) writes to.

Within a partition records are ordered by their *rank*, ``(revision, is-snapshot, index,
is-tombstone)``, not by position alone: a snapshot taken at a revision whose watched changes
were already produced (etcd compacted past the checkpoint before a restart) must sort after
them rather than be mistaken for them, and a DELETE whose tombstone was lost must still get it.

The checkpoint record lives in a single-partition topic of its own: key = the pipeline name,
value = the last event of a flush (as JSON, values dropped past a size limit), the open
snapshot's ``snapshot_begin`` if any, and the topics in use.
"""

import dataclasses
from dataclasses import dataclass
from typing import Self

import orjson

from bridge.errors import SinkRejectedError
from bridge.events import SNAPSHOT_OPS, Event, Op
from bridge.formats import EventFormat
from sinks.kafka.settings import KafkaSettings

HEADER_REVISION = "revision"
HEADER_INDEX = "index"
HEADER_TYPE = "type"
HEADER_OP = "op"
HEADER_PIPELINE = "pipeline"
HEADER_REASON = "reason"
"""Markers only: the snapshot's reason, so that a marker whose record has no value (Debezium's)
still says whether it opens a resync."""

CHECKPOINT_VERSION = 1
_CHECKPOINT_VALUES_LIMIT = 256 * 1024
"""A checkpoint whose event would exceed this drops the event's value and prev_value."""

Headers = list[tuple[str, str | bytes | None]]

Where = tuple[str, int]
"""A partition: (topic, partition)."""

Rank = tuple[int, int, int, int]
"""A record's place in its partition: (revision, is-snapshot, index, is-tombstone)."""


def rank_of(event: Event, *, tombstone: bool = False) -> Rank:
    return (event.revision, event.op in SNAPSHOT_OPS, event.index, tombstone)


def rank_in(headers: dict[str, bytes], *, tombstone: bool) -> Rank:
    """The rank a record's headers give; KeyError or ValueError when they cannot."""
    revision = int(headers[HEADER_REVISION])
    index = int(headers[HEADER_INDEX])
    op = Op(headers[HEADER_OP].decode())
    # Only a DELETE's null value is a tombstone; a marker's is its record in a format whose
    # consumers skip markers (Debezium).
    return (revision, op in SNAPSHOT_OPS, index, tombstone and op is Op.DELETE)


def headers_of(event: Event, *, pipeline: bytes) -> Headers:
    # The enums are StrEnums: encoding the member itself skips the slow ``.value`` lookup.
    return [
        (HEADER_REVISION, b"%d" % event.revision),
        (HEADER_INDEX, b"%d" % event.index),
        (HEADER_TYPE, event.type.encode()),
        (HEADER_OP, event.op.encode()),
        (HEADER_PIPELINE, pipeline),
    ]


def binary_content(settings: KafkaSettings, record_format: EventFormat) -> bool:
    """Whether records carry the format's attributes as headers (CloudEvents' binary content
    mode), for the sink that writes them and the reader that reads them back alike."""
    return settings.content_mode == "binary" and record_format.has_binary_mode


def reason_header(marker: Event) -> list[tuple[str, bytes]]:
    """The ``reason`` header of a marker's records (none for an event without a reason)."""
    return [] if marker.reason is None else [(HEADER_REASON, marker.reason.encode())]


def header_map(
    headers: dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None,
) -> dict[str, bytes]:
    """Headers as a dict of bytes (a repeated name keeps its last value)."""
    items = headers.items() if isinstance(headers, dict) else headers or []
    return {
        name: value.encode() if isinstance(value, str) else value
        for name, value in items
        if value is not None
    }


@dataclass(frozen=True, slots=True)
class TailRecord:
    """The last record of one partition, as read back."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]

    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def rank(self, *, pipeline: str) -> Rank:
        """This record's rank; SinkRejectedError if etcd-bridge's ``pipeline`` did not write it."""
        owner = self.headers.get(HEADER_PIPELINE)
        if owner is None:
            raise SinkRejectedError(
                f"kafka: the last record of {self.where()} was not written by etcd-bridge "
                f"(no {HEADER_PIPELINE!r} header); give the pipeline a topic of its own"
            )
        if owner.decode(errors="replace") != pipeline:
            raise SinkRejectedError(
                f"kafka: the last record of {self.where()} belongs to pipeline "
                f"{owner.decode(errors='replace')!r}, not {pipeline!r}; each pipeline "
                "(BRIDGE_NAME) needs topics of its own"
            )
        try:
            return rank_in(self.headers, tombstone=self.value is None)
        except (KeyError, ValueError) as error:
            raise SinkRejectedError(
                f"kafka: the last record of {self.where()} has malformed etcd-bridge headers "
                f"({error})"
            ) from error


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What the checkpoint topic holds: the last event of a flush whose records were all
    acknowledged before this record was produced."""

    event: Event
    snapshot_begin: Event | None
    topics: tuple[str, ...]

    def encode(self) -> bytes:
        event = self.event
        if len(event.value or b"") + len(event.prev_value or b"") > _CHECKPOINT_VALUES_LIMIT:
            event = dataclasses.replace(event, value=None, prev_value=None)
        return orjson.dumps(
            {
                "version": CHECKPOINT_VERSION,
                "event": event.to_dict(),
                "snapshot_begin": None
                if self.snapshot_begin is None
                else self.snapshot_begin.to_dict(),
                "topics": list(self.topics),
            }
        )

    def headers(self, *, pipeline: bytes) -> Headers:
        return [
            (HEADER_REVISION, b"%d" % self.event.revision),
            (HEADER_INDEX, b"%d" % self.event.index),
            (HEADER_PIPELINE, pipeline),
        ]

    @classmethod
    def decode(cls, value: bytes) -> Self:
        document = orjson.loads(value)
        begin = document.get("snapshot_begin")
        return cls(
            event=Event.from_dict(document["event"]),
            snapshot_begin=None if begin is None else Event.from_dict(begin),
            topics=tuple(str(topic) for topic in document.get("topics", ())),
        )

    @classmethod
    def read(cls, record: TailRecord, *, pipeline: str) -> Self:
        """The checkpoint the last record of the checkpoint topic holds; SinkRejectedError
        if ``pipeline`` did not write it."""
        where = f"the checkpoint topic {record.topic!r} ({record.where()})"
        owner = record.headers.get(HEADER_PIPELINE, b"").decode(errors="replace")
        if owner != pipeline or record.value is None:
            raise SinkRejectedError(
                f"kafka: {where} ends with a record of pipeline {owner!r}, not "
                f"{pipeline!r}; set BRIDGE_KAFKA__CHECKPOINT_TOPIC to a topic of its own"
            )
        try:
            return cls.decode(record.value)
        except (ValueError, KeyError, TypeError) as error:
            raise SinkRejectedError(
                f"kafka: {where} ends with a record that is not an etcd-bridge checkpoint ({error})"
            ) from error
