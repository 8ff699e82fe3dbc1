"""The normalized event: one etcd change, or one marker, as every sink receives it.

Every event has a *position* ``(revision, index)``, which totally orders the stream a sink
receives:

- a watched change sits at its ``mod_revision``; ``index`` is its place among the changes of
  that revision (a transaction changes several keys at one revision);
- a snapshot is taken at one pinned revision ``R``; all of its events sit at revision ``R``:
  index 0 is a ``snapshot_begin`` marker, then one ``snapshot`` event per key in key order,
  then a ``snapshot_end`` marker. The watch that follows starts at ``R + 1``.

A revision may be handed over in pieces (a delete-range of a million keys is one revision),
and a sink may durably hold part of one: positions are per event, so resuming at the next
index is exact. A watched change that is followed by more changes of its revision has
``more`` set; the last change of a revision has not, which is how a sink or a consumer that
must apply a transaction whole knows it is complete. Snapshots are framed by their markers.

An event a sink refused for good may be delivered with its value and previous value left out
(``BRIDGE_<NAME>__ON_REFUSED=omit_value``, ``bridge.refusal``): ``omitted_bytes`` then says so
and how large they were, so a consumer reads them from etcd instead.

Positions are what make delivery exactly once: a sink reports the position of the last event
it durably holds, and the pump never hands it an event at or below that position. The JSON
schema is documented in docs/events.md; keep the two in step.
"""

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

import orjson

from bridge.encoding import decode_field, encode_field


class EventType(enum.StrEnum):
    """What etcd did: the etcd event type, or MARKER for the bridge's own stream markers."""

    PUT = "PUT"
    DELETE = "DELETE"
    MARKER = "MARKER"


class Op(enum.StrEnum):
    """What the event means to a consumer."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    SNAPSHOT = "snapshot"
    SNAPSHOT_BEGIN = "snapshot_begin"
    SNAPSHOT_END = "snapshot_end"


class SnapshotReason(enum.StrEnum):
    """Why a snapshot was taken; carried by its ``snapshot_begin`` marker."""

    INITIAL = "initial"
    COMPACTED = "compacted"
    REQUESTED = "requested"
    """An operator asked for it (``POST /resnapshot``), for a consumer that lost its state."""
    LOST = "lost"
    """The sink lost data it had acknowledged (a server restarted empty, a stream deleted, a
    file truncated): the pump found its tail behind what it had flushed, and the sink gets the
    prefix's whole state again rather than a silent resume in the middle."""


SNAPSHOT_OPS = frozenset({Op.SNAPSHOT_BEGIN, Op.SNAPSHOT, Op.SNAPSHOT_END})
_BYTE_FIELDS = ("key", "value", "prev_value")


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where an event sits in a sink's stream; positions compare in stream order."""

    revision: int
    index: int

    def __str__(self) -> str:
        return f"{self.revision}-{self.index}"


@dataclass(frozen=True, slots=True)
class OmittedBytes:
    """The sizes, in bytes, of what an event's delivery left out: its value and previous
    value, each None where etcd sent none (so nothing was left out there)."""

    value: int | None
    prev_value: int | None

    @classmethod
    def of(cls, event: "Event") -> "OmittedBytes":
        value, prev = event.value, event.prev_value
        return cls(
            value=None if value is None else len(value),
            prev_value=None if prev is None else len(prev),
        )

    @property
    def total(self) -> int:
        return (self.value or 0) + (self.prev_value or 0)

    def to_dict(self) -> dict[str, int | None]:
        return {"value": self.value, "prev_value": self.prev_value}

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> "OmittedBytes":
        """Inverse of ``to_dict``; ValueError if ``document`` is not one."""
        if not isinstance(document, dict):
            raise ValueError(f"omitted_bytes is not an object: {document!r}")
        return cls(value=_size(document.get("value")), prev_value=_size(document.get("prev_value")))


def _size(value: Any) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise ValueError(f"not a size in bytes: {value!r}")


def past(events: "list[Event]", last: Position | None) -> "list[Event]":
    """The events after ``last``: what a sink whose durable tail is ``last`` is handed, and the
    one rule of where delivery resumes, for the pump and the contract kit alike. A batch may
    then end after any of them: positions are per event (see the module docstring). Cheap in
    the common case where all of them are past it."""
    if last is None or not events or events[0].position > last:
        return events
    return [event for event in events if event.position > last]


@dataclass(slots=True, unsafe_hash=True)
class Event:
    """One normalized event. ``value`` and ``prev_value`` are None when etcd sent none.

    The hot paths (``bridge.etcd``) build events with positional arguments: a new field goes
    last."""

    revision: int
    index: int
    type: EventType
    op: Op
    key: bytes
    value: bytes | None = None
    prev_value: bytes | None = None
    mod_revision: int = 0
    create_revision: int = 0
    version: int = 0
    lease: int = 0
    reason: SnapshotReason | None = None
    more: bool = field(default=False, compare=False)
    """Further changes of this revision follow this one (watched changes only). Not part of
    equality: it says how the stream was cut, not what changed."""
    closes_snapshot: bool = field(default=False, compare=False)
    """The last key of a snapshot: its ``snapshot_end`` marker follows (Debezium's
    ``snapshot: "last"``). Not in the native format, which frames snapshots by markers."""
    prev_mod_revision: int = field(default=0, compare=False)
    """The rest of etcd's ``prev_kv`` (0 when etcd sent none): what Debezium's ``before`` row
    carries. Not in the native format, hence not part of equality: a native record read back
    has none of them."""
    prev_create_revision: int = field(default=0, compare=False)
    prev_version: int = field(default=0, compare=False)
    prev_lease: int = field(default=0, compare=False)
    opens_snapshot: bool = field(default=False, compare=False)
    """The first key of a snapshot, right after its ``snapshot_begin`` marker (Debezium's
    ``snapshot: "first"``): a requested snapshot numbers on after the changes of its revision
    the sink already holds, so its first key's index says nothing. Not in the native format."""
    omitted_bytes: OmittedBytes | None = None
    """Set on an event delivered without its value and previous value (both None then) because
    the sink refused it whole: their sizes. Part of equality and of every format."""

    @property
    def position(self) -> Position:
        return Position(self.revision, self.index)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of docs/events.md, with non-UTF-8 byte fields base64-encoded."""
        document: dict[str, Any] = {
            "revision": self.revision,
            "index": self.index,
            "type": self.type.value,
            "op": self.op.value,
        }
        encoded: list[str] = []
        for name in _BYTE_FIELDS:
            raw: bytes | None = getattr(self, name)
            if raw is None:
                document[name] = None
                continue
            text, is_base64 = encode_field(raw)
            document[name] = text
            if is_base64:
                encoded.append(name)
        document["mod_revision"] = self.mod_revision
        document["create_revision"] = self.create_revision
        document["version"] = self.version
        document["lease"] = self.lease
        if self.reason is not None:
            document["reason"] = self.reason.value
        if self.more:
            document["more"] = True
        if self.omitted_bytes is not None:
            document["omitted_bytes"] = self.omitted_bytes.to_dict()
        if encoded:
            document["b64"] = encoded
        return document

    def to_json(self) -> bytes:
        value, prev = self.value, self.prev_value
        try:  # the common case: every byte field is UTF-8
            document = {
                "revision": self.revision,
                "index": self.index,
                "type": self.type,
                "op": self.op,
                "key": self.key.decode(),
                "value": None if value is None else value.decode(),
                "prev_value": None if prev is None else prev.decode(),
                "mod_revision": self.mod_revision,
                "create_revision": self.create_revision,
                "version": self.version,
                "lease": self.lease,
            }
        except UnicodeDecodeError:
            return orjson.dumps(self.to_dict())
        if self.reason is not None:
            document["reason"] = self.reason
        if self.more:
            document["more"] = True
        if self.omitted_bytes is not None:  # rare (a refused event): one test when unset
            document["omitted_bytes"] = self.omitted_bytes.to_dict()
        return orjson.dumps(document)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> "Event":
        """Inverse of ``to_dict``: rebuild the event, bytes exact."""
        encoded = set(document.get("b64", ()))
        fields: dict[str, bytes | None] = {}
        for name in _BYTE_FIELDS:
            text = document.get(name)
            fields[name] = None if text is None else decode_field(text, is_base64=name in encoded)
        key = fields["key"]
        if key is None:
            raise ValueError("event has no key")
        reason = document.get("reason")
        omitted = document.get("omitted_bytes")
        return cls(
            revision=int(document["revision"]),
            index=int(document["index"]),
            type=EventType(document["type"]),
            op=Op(document["op"]),
            key=key,
            value=fields["value"],
            prev_value=fields["prev_value"],
            mod_revision=int(document["mod_revision"]),
            create_revision=int(document["create_revision"]),
            version=int(document["version"]),
            lease=int(document["lease"]),
            reason=None if reason is None else SnapshotReason(reason),
            more=bool(document.get("more", False)),
            omitted_bytes=None if omitted is None else OmittedBytes.from_dict(omitted),
        )

    @classmethod
    def from_json(cls, line: bytes) -> "Event":
        return cls.from_dict(orjson.loads(line))


def values_omitted(event: Event) -> Event:
    """``event`` without its value and previous value, marked with their sizes: how an event
    its sink refused whole is delivered with ``ON_REFUSED=omit_value``."""
    return dataclasses.replace(
        event, value=None, prev_value=None, omitted_bytes=OmittedBytes.of(event)
    )


def snapshot_marker(
    *, revision: int, index: int, op: Op, prefix: bytes, reason: SnapshotReason
) -> Event:
    """A ``snapshot_begin`` or ``snapshot_end`` marker; its key is the watched prefix."""
    return Event(
        revision=revision,
        index=index,
        type=EventType.MARKER,
        op=op,
        key=prefix,
        reason=reason,
    )
