"""A watch response as it came off the wire, its events parsed a chunk at a time.

gRPC hands a response to its deserializer as one ``bytes``. Parsed whole, a replay response
(up to 1,000 revisions: 100,000 events for transactions of 100 keys, 26 MB on the wire)
takes 32 MB more in its parsed form, all of it alive until its last event is handled, on top
of the bytes. ``WatchResponse`` parses a response over ``whole_bytes`` differently: it walks
the message's fields once, parses the fields other than ``events`` (the header, ``created``,
``fragment``...) at once, and cuts the events into runs of at most ``chunk_events`` whose
bytes are parsed only when the run is handled, so one run's parsed form is alive at a time.
A run of consecutive ``events`` fields is itself a valid encoding of a response holding just
those events (protobuf concatenates repeated fields), so the generated message parses it, in
C. The walk reads each event's tag and length and skips the event: about 2,300 instructions
per event, a tenth more for turning a replay's bytes into events, for 32 MB less per replay
response (measured on a 26 MB response; BENCHMARKS.md, "Watch responses parsed a chunk at a
time").
A response up to ``whole_bytes`` (live changes, progress answers) is parsed whole as before.
"""

from collections.abc import Callable, Iterator, Sequence
from typing import Any

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


def _varint(raw: bytes, position: int) -> tuple[int, int]:
    """The varint at ``position`` and the position after it."""
    value = shift = 0
    while True:
        byte = raw[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise ValueError("a varint longer than 10 bytes")


def _skip(raw: bytes, position: int, wire_type: int) -> int:
    """The position after a field's value of ``wire_type`` starting at ``position``."""
    if wire_type == _VARINT:
        return _varint(raw, position)[1]
    if wire_type == _LENGTH_DELIMITED:
        length, position = _varint(raw, position)
        return position + length
    if wire_type == _FIXED64:
        return position + 8
    if wire_type == _FIXED32:
        return position + 4
    raise ValueError(f"wire type {wire_type} (a group) in a watch response")


class WatchResponse:
    """One watch response (see the module docstring): ``head`` holds its fields other than
    the events (and, parsed whole, the events too), ``total`` counts its events,
    ``last_event`` is the last one (None: none), and ``chunks`` gives them in order, at most
    ``chunk_events`` at a time, ``chunk_count`` times."""

    __slots__ = ("_parse", "_raw", "_runs", "_whole", "head", "last_event", "total")

    def __init__(
        self,
        raw: bytes,
        *,
        parse: Callable[[bytes | memoryview], Any],
        events_field: int,
        chunk_events: int,
        whole_bytes: int,
    ) -> None:
        """``parse``: the response message's ``FromString``; ``events_field``: the number of
        its repeated ``events`` field."""
        self._raw = raw
        self._parse = parse
        # ``_runs``: (start, end) of each chunk, indexes into ``_whole`` when the response
        # was parsed whole, else byte offsets into ``raw`` (``_walk``).
        if len(raw) <= whole_bytes:
            self.head = parse(raw)
            self._whole: Sequence[Any] | None = self.head.events
            self.total = len(self._whole)
            self._runs = [
                (start, min(start + chunk_events, self.total))
                for start in range(0, self.total, chunk_events)
            ]
            self.last_event = self._whole[-1] if self.total else None
            return
        self._whole = None
        if events_field > 15:
            raise ValueError("the events field's tag must be one byte (a number up to 15)")
        head, last = self._walk(events_field << 3 | _LENGTH_DELIMITED, chunk_events)
        self.head = parse(b"".join(head))
        self.last_event = parse(memoryview(raw)[last:]).events[0] if self.total else None

    @property
    def chunk_count(self) -> int:
        return len(self._runs)

    def chunks(self) -> Iterator[Sequence[Any]]:
        """The events, one run at a time, each parsed as it is asked for."""
        whole = self._whole
        if whole is not None:
            for start, end in self._runs:
                yield whole[start:end]
            return
        view, parse = memoryview(self._raw), self._parse
        for start, end in self._runs:
            yield parse(view[start:end]).events

    def _walk(self, events_tag: int, chunk_events: int) -> tuple[list[bytes], int]:
        """Set ``_runs`` (byte ranges of at most ``chunk_events`` consecutive events) and
        ``total``; return the bytes of the other fields and where the last event's field
        starts (meaningless without events)."""
        raw = self._raw
        head: list[bytes] = []
        runs: list[tuple[int, int]] = []
        total = last = position = 0
        end = len(raw)
        while position < end:
            if raw[position] == events_tag:
                # A run of events, the hot loop: one tag byte, a length of one or two bytes
                # (events up to 16 KiB) read inline, a longer one by ``_varint``.
                run_start, count = position, 0
                while position < end and raw[position] == events_tag:
                    last = position
                    length = raw[position + 1]
                    if length < 0x80:
                        position += 2 + length
                    elif raw[position + 2] < 0x80:
                        position += 3 + (length & 0x7F | raw[position + 2] << 7)
                    else:
                        length, position = _varint(raw, position + 1)
                        position += length
                    count += 1
                    if count == chunk_events:
                        break
                runs.append((run_start, position))
                total += count
                continue
            field_start = position
            tag, position = _varint(raw, position)
            position = _skip(raw, position, tag & 7)
            head.append(raw[field_start:position])
        if position != end:
            raise ValueError("a watch response cut in the middle of a field")
        self._runs, self.total = runs, total
        return head, last
