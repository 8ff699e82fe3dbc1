"""One frame of the log: the events of one chunk, checksummed, in a form read back fast.

A frame is a fixed header and a payload. The header holds the payload's length, a CRC-32 of
everything after the CRC itself, etcd's revision when the chunk arrived, and the positions of
the chunk's first and last events, so that finding where a sink resumes reads headers only.
The payload is the events as tuples of ints, bytes and None in ``marshal``'s format: the
interpreter writes and reads those in C, several times faster than any per-field encoding
written in Python, and the log is a local cache written and read by the same bridge (its
segments carry the format's version; a log of another version is dropped and etcd read again,
``bridge.journal.segments``).

A frame whose length or CRC does not hold is a torn write (a crash or power loss while it
was appended): recovery cuts the log before it.
"""

import marshal
import struct
import zlib
from dataclasses import dataclass

from bridge.etcd import Chunk
from bridge.events import Event, EventType, OmittedBytes, Op, Position, SnapshotReason

_HEADER = struct.Struct("<IIqqqqq")
"""Payload length, CRC-32 (of the rest of the header and the payload), the chunk's revision,
the first event's revision and index, the last event's revision and index."""
HEADER_BYTES = _HEADER.size
_CHECKED_FROM = 8
"""The CRC covers the header from this byte on, and the payload."""

_TYPES = tuple(EventType)
_TYPE_CODES = {kind: code for code, kind in enumerate(_TYPES)}
_OPS = tuple(Op)
_OP_CODES = {op: code for code, op in enumerate(_OPS)}
_REASONS: tuple[SnapshotReason | None, ...] = (None, *SnapshotReason)
_REASON_CODES = {reason: code for code, reason in enumerate(_REASONS)}
_MORE, _CLOSES_SNAPSHOT, _OPENS_SNAPSHOT = 1, 2, 4


class TornFrameError(Exception):
    """The bytes at an offset are not a whole, intact frame."""


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """What a frame holds, read without its payload."""

    length: int
    checksum: int
    revision: int
    first: Position
    last: Position

    @property
    def size(self) -> int:
        """Bytes of the whole frame, header included."""
        return HEADER_BYTES + self.length


def encode(chunk: Chunk) -> bytes:
    """The frame of ``chunk``, whose events must not be empty."""
    events = chunk.events
    rows = (
        chunk.size,
        tuple(
            (
                event.revision,
                event.index,
                _TYPE_CODES[event.type],
                _OP_CODES[event.op],
                event.key,
                event.value,
                event.prev_value,
                event.mod_revision,
                event.create_revision,
                event.version,
                event.lease,
                _REASON_CODES[event.reason],
                (_MORE if event.more else 0)
                | (_CLOSES_SNAPSHOT if event.closes_snapshot else 0)
                | (_OPENS_SNAPSHOT if event.opens_snapshot else 0),
                event.prev_mod_revision,
                event.prev_create_revision,
                event.prev_version,
                event.prev_lease,
                None
                if event.omitted_bytes is None
                else (event.omitted_bytes.value, event.omitted_bytes.prev_value),
            )
            for event in events
        ),
    )
    payload = marshal.dumps(rows)
    first, last = events[0], events[-1]
    rest = _HEADER.pack(
        len(payload), 0, chunk.revision, first.revision, first.index, last.revision, last.index
    )[_CHECKED_FROM:]
    checksum = zlib.crc32(payload, zlib.crc32(rest))
    return struct.pack("<II", len(payload), checksum) + rest + payload


def read_header(data: bytes | memoryview) -> FrameHeader:
    """The header at the start of ``data`` (at least ``HEADER_BYTES`` long)."""
    length, checksum, revision, first_revision, first_index, last_revision, last_index = (
        _HEADER.unpack_from(data)
    )
    return FrameHeader(
        length=length,
        checksum=checksum,
        revision=revision,
        first=Position(first_revision, first_index),
        last=Position(last_revision, last_index),
    )


def decode(header_bytes: bytes, payload: bytes) -> Chunk:
    """The chunk of a frame; TornFrameError if its checksum does not hold."""
    header = read_header(header_bytes)
    checked = zlib.crc32(payload, zlib.crc32(header_bytes[_CHECKED_FROM:HEADER_BYTES]))
    if len(payload) != header.length or checked != header.checksum:
        raise TornFrameError(f"frame checksum mismatch at revision {header.first.revision}")
    size, rows = marshal.loads(payload)  # noqa: S302 - our own file, its checksum verified
    types, ops, reasons = _TYPES, _OPS, _REASONS
    events = [  # the row's fields in ``encode``'s order, which is Event's
        Event(
            row[0],
            row[1],
            types[row[2]],
            ops[row[3]],
            row[4],
            row[5],
            row[6],
            row[7],
            row[8],
            row[9],
            row[10],
            reasons[row[11]],
            bool(row[12] & _MORE),
            bool(row[12] & _CLOSES_SNAPSHOT),
            row[13],
            row[14],
            row[15],
            row[16],
            bool(row[12] & _OPENS_SNAPSHOT),
            None if row[17] is None else OmittedBytes(*row[17]),
        )
        for row in rows
    ]
    return Chunk(events, header.revision, size)
