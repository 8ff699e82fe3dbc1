"""CloudEvents 1.0: one CloudEvent per event, for Knative, event routers and the CloudEvents SDKs.

The mapping is documented in docs/formats.md ("cloudevents"); keep the two in step. In short:
``id`` is ``<pipeline>:<revision>-<index>`` (``-s<index>`` for a snapshot's events), so a
replayed event keeps its id and consumers can deduplicate; ``source`` names the cluster and the
watched prefixes; ``type`` is ``io.etcd.bridge.<op>``, markers included; ``subject`` is the key;
the position travels in the ``revision`` and ``index`` extensions and ``data`` holds the
key-value (values embedded by ``bridge.formats.values``, like every format); an event
delivered without its values (its sink refused it whole) says their sizes in the
``omittedbytes`` and ``omittedprevbytes`` extensions, for routers to filter on.

Two content modes, one mapping:

- **structured** (``encode``, ``application/cloudevents+json``): attributes and ``data`` in one
  JSON document; what the file, stdout, Redis and NATS sinks write, and Kafka on request;
- **binary** (``binary``, Kafka's default per the CloudEvents Kafka protocol binding):
  attributes as ``ce_<name>`` headers holding their canonical strings (UTF-8, no
  percent-encoding: that is the HTTP binding's rule, not Kafka's), ``content-type`` for
  ``datacontenttype``, and the ``data`` JSON as the record value.

Three spec rules shape the attributes beyond the obvious:

- a CloudEvents Integer is 32-bit, and etcd revisions are 64-bit: ``revision`` is therefore a
  String of decimal digits (the CloudEvents Go SDK, which Knative uses, rejects a larger JSON
  number). ``index`` counts within one revision and stays far below 2^31: an Integer.
- a CloudEvents String may not hold control characters or Unicode noncharacters: a key that is
  not such a String (or not UTF-8) travels in ``subject`` base64-encoded, and the
  ``keyencoding`` extension says so. ``data.key`` always carries the key as every format does.
- ``source`` + ``id`` must be unique per distinct event, and a snapshot taken after a resync
  may sit at the revision of watched changes already delivered (same revision and index):
  hence the ``s`` in a snapshot event's id.

``_records`` is the hot path, one loop for both content modes (``encode``, ``encode_batch``,
``encode_lines`` and ``binary`` are made of it): the common event (UTF-8 key and values,
``values=bytes``, not a marker) is built inline, its ``data`` one dict literal for
``orjson.dumps``, joined with the constant parts of the record, serialized once per format;
the clock is read once per batch and ``time`` formatted at most once per millisecond. Every
other event takes the general path (``_encode_any``, ``_binary_any``), which makes the same
record by the book, more slowly; the unit tests hold the two together.
"""

import base64
import re
import time
from collections.abc import Iterable, Sequence
from time import time_ns
from typing import Any, Final, Literal, overload
from urllib.parse import quote

import orjson

from bridge.encoding import decode_field
from bridge.events import SNAPSHOT_OPS, Event, EventType, OmittedBytes, Op, SnapshotReason
from bridge.formats.base import EventFormat, FormatContext
from bridge.formats.values import embed_fields, extract_fields
from config.output import FormatName, OutputSettings, ValuesMode

SPECVERSION: Final = "1.0"
TYPE_PREFIX: Final = "io.etcd.bridge."
STRUCTURED_CONTENT_TYPE: Final = "application/cloudevents+json"
DATA_CONTENT_TYPE: Final = "application/json"
HEADER_PREFIX: Final = "ce_"
"""The Kafka binding's prefix of attribute headers."""
CONTENT_TYPE_HEADER: Final = "content-type"
KEY_ENCODING_BASE64: Final = "base64"

Headers = list[tuple[str, bytes]]
"""Kafka record headers, as confluent_kafka takes them."""

TYPES: Final = {op: TYPE_PREFIX + op.value for op in Op}
"""The CloudEvents ``type`` of each op."""
_OPS: Final = {name: op for op, name in TYPES.items()}
_TYPE_HEADERS: Final = {op: name.encode() for op, name in TYPES.items()}
_EVENT_TYPES: Final = {
    Op.CREATE: EventType.PUT,
    Op.UPDATE: EventType.PUT,
    Op.SNAPSHOT: EventType.PUT,
    Op.DELETE: EventType.DELETE,
    Op.SNAPSHOT_BEGIN: EventType.MARKER,
    Op.SNAPSHOT_END: EventType.MARKER,
}
"""etcd's event type follows from the op, so records do not repeat it."""
_UPDATE, _DELETE = Op.UPDATE, Op.DELETE

_NOT_A_STRING_BMP = re.compile("[\x00-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff]")
_NOT_A_STRING_ASTRAL = re.compile(
    "["
    + "".join(chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(1, 17))
    + "]"
)
"""What a CloudEvents String may not hold: control characters and noncharacters (text decoded
from UTF-8 holds no lone surrogates). Two patterns: the astral one is slow, and rarely needed."""

OMITTED_ATTRIBUTES: Final = ("omittedbytes", "omittedprevbytes")
"""The extensions on an event delivered without its value and previous value (the sink
refused it whole, ``BRIDGE_<NAME>__ON_REFUSED=omit_value``): the size of each left out."""

_DECIMAL = re.compile(r"-?[0-9]+")
_BACKSLASH, _DEL = ord("\\"), 0x7F
"""Bytes looked for as ints: ``int in bytes`` is one ``memchr``, where ``bytes in bytes``
first tries the needle as an int, and formats and clears the TypeError that raises."""
_SMALL = 1024
_DIGITS: Final = tuple(b"%d" % number for number in range(_SMALL))
"""The decimal digits of the indexes below ``_SMALL``, formatted once."""
_CHANGE_IDS: Final = tuple(b"-" + digits for digits in _DIGITS)
_SNAPSHOT_IDS: Final = tuple(b"-s" + digits for digits in _DIGITS)
"""What ends the ``id`` of a change and of a snapshot's event at the indexes below ``_SMALL``."""
_INDEX_ATTRIBUTES: Final = tuple(b'","index":' + digits for digits in _DIGITS)
_VALUE_FIELDS = ("value", "prev_value")


def is_cloudevents_string(text: str) -> bool:
    """Whether ``text`` is a valid CloudEvents String."""
    # isprintable() is fast and stricter (it also refuses spaces other than ' ', format
    # characters, private use and unassigned code points): only what it refuses needs a look.
    if text.isprintable():
        return True
    if text.isascii() or _NOT_A_STRING_BMP.search(text) is not None:
        return False  # ASCII that is not printable holds a control character
    return max(text) <= "\uffff" or _NOT_A_STRING_ASTRAL.search(text) is None


def subject_of(key: bytes) -> tuple[str | None, bool]:
    """The ``subject`` for ``key`` and whether it is base64 (None: no subject, for the empty
    key of a marker over the whole keyspace: a present ``subject`` must not be empty)."""
    if not key:
        return None, False
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return base64.b64encode(key).decode("ascii"), True
    if is_cloudevents_string(text):
        return text, False
    return base64.b64encode(key).decode("ascii"), True


def source_of(context: FormatContext) -> str:
    """``etcd://<cluster>/<prefixes>``: the watched prefixes as configured (comma-joined, empty
    for the whole keyspace), percent-encoded as a URI path, so ``/app/`` reads
    ``etcd://<cluster>//app/`` and every set of prefixes gives its own source."""
    label = quote(context.keyspace.describe(), safe="/,")
    return f"etcd://{quote(context.cluster, safe='')}/{label}"


class CloudEventsFormat(EventFormat):
    """CloudEvents 1.0, structured (``encode``) or Kafka binary (``binary``) content mode."""

    name = FormatName.CLOUDEVENTS
    content_type = STRUCTURED_CONTENT_TYPE
    data_content_type = DATA_CONTENT_TYPE
    """The media type of ``data``: a binary record's value (its ``content-type`` header)."""

    def __init__(self, context: FormatContext, output: OutputSettings) -> None:
        del output  # no options of its own
        self._values = context.values
        self._fast = context.values is ValuesMode.BYTES
        self.source = source_of(context)
        self.pipeline = context.pipeline
        self._id_prefix = f"{context.pipeline}:"
        self._id_prefix_bytes = self._id_prefix.encode()
        self._millisecond = -1
        self._stamp = ""
        self._stamp_bytes = self._timed = b""
        self._tick(time_ns() // 1_000_000)
        self._specversion_header = ("ce_specversion", SPECVERSION.encode())
        self._source_header = ("ce_source", self.source.encode())
        self._content_type_header = (CONTENT_TYPE_HEADER, DATA_CONTENT_TYPE.encode())
        self._pipeline_header = ("ce_pipeline", context.pipeline.encode())
        # The constant parts of a structured record, serialized once (see ``encode``).
        self._id_head = orjson.dumps({"specversion": SPECVERSION, "id": self._id_prefix})[:-2]
        self._after_id = {
            op: b'",'
            + orjson.dumps({"source": self.source, "type": TYPES[op], "subject": ""})[1:-3]
            for op in Op
        }
        self._before_data = b"," + orjson.dumps({"pipeline": self.pipeline, "data": 0})[1:-2]

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, event: Event) -> bytes:
        """The structured-mode record: attributes at the top level, ``data`` a JSON value."""
        return self.encode_batch((event,))[0]

    def encode_batch(self, batch: Sequence[Event]) -> list[bytes]:
        """The structured records of ``batch``, all with the same ``time``."""
        return self._records(batch, binary=False)

    def encode_lines(self, batch: Sequence[Event]) -> bytes:
        """One structured record per event, each ending in a newline (JSON lines)."""
        if not batch:
            return b""
        lines = self.encode_batch(batch)
        lines.append(b"")
        return b"\n".join(lines)

    def binary(self, event: Event) -> tuple[Headers, bytes]:
        """The Kafka binary-mode record: ``ce_`` headers (each attribute's canonical string,
        UTF-8) plus ``content-type``, and the ``data`` JSON as the value. Never a null value,
        which a compacted topic would take for a tombstone."""
        return self._records((event,), binary=True)[0]

    def record_values(self, batch: Sequence[Event]) -> list[bytes]:
        """``encode_batch``: a structured record is the whole event, markers included."""
        return self.encode_batch(batch)

    def binary_batch(self, batch: Sequence[Event]) -> list[tuple[Headers, bytes]]:
        """``binary`` of each event, all with the same ``time``."""
        return self._records(batch, binary=True)

    @overload
    def _records(self, batch: Sequence[Event], *, binary: Literal[False]) -> list[bytes]: ...

    @overload
    def _records(
        self, batch: Sequence[Event], *, binary: Literal[True]
    ) -> list[tuple[Headers, bytes]]: ...

    def _records(
        self, batch: Sequence[Event], *, binary: bool
    ) -> list[bytes] | list[tuple[Headers, bytes]]:
        """The records of ``batch`` in one content mode, all with the same ``time``.

        This is the hot path, one loop for both modes. The common event (UTF-8 key and values,
        ``values=bytes``, a non-empty printable key, not a marker, not without its value) is
        built here inline: its ``data`` one dict literal for ``orjson.dumps``, the structured
        record joined around it from parts serialized once per format (``__init__``,
        ``_tick``), its subject checked for being a String. Every other event takes the general
        path (``_encode_any``, ``_binary_any``), which makes the same record by the book, more
        slowly; the unit tests hold the two together. Why inline: two Python calls per event
        (a helper building ``data``, the subject's check) and the tuple passed back cost a
        tenth of a record's instructions; reading the clock and the constant parts per record
        rather than per batch cost 8% of the Redis and NATS sinks' CPU per record
        (BENCHMARKS.md, 1 Dec 2026, tenth session, and "Issue 13: format cost, third pass")."""
        millisecond = time_ns() // 1_000_000
        if millisecond != self._millisecond:
            self._tick(millisecond)
        id_head, after_id, stamp, timed = self._id_head, self._after_id, self._stamp, self._timed
        before_data, dumps, join = self._before_data, orjson.dumps, b"".join
        fast = self._fast
        records: list[Any] = []
        # The events of a transaction or a snapshot page share their revision: its digits
        # are formatted once for them all, and small indexes' parts are looked up.
        revision, revision_digits = -1, b""
        for event in batch:
            key, value, prev = event.key, event.value, event.prev_value
            if not fast or event.reason is not None or not key:
                records.append(self._any(event, binary=binary, stamp=stamp))
                continue
            try:
                subject = key.decode()
                value_text = None if value is None else value.decode()
                prev_text = None if prev is None else prev.decode()
            except UnicodeDecodeError:
                records.append(self._any(event, binary=binary, stamp=stamp))
                continue
            subject_json = dumps(subject)
            # A printable subject is a CloudEvents String as it is. An ASCII key whose JSON
            # escapes nothing (orjson escapes every control character) and holds no DEL is
            # printable: two byte searches cost a fraction of ``isprintable``, which took 7%
            # of a record's instructions.
            if (value is None and event.omitted_bytes is not None) or not (
                (key.isascii() and _BACKSLASH not in subject_json and _DEL not in key)
                or subject.isprintable()
            ):
                records.append(self._any(event, binary=binary, stamp=stamp))
                continue
            op = event.op
            # One literal per shape: cheaper than adding the previous key-value's fields.
            if prev is not None and (op is _UPDATE or op is _DELETE):
                data = {
                    "key": subject,
                    "value": value_text,
                    "prev_value": prev_text,
                    "create_revision": event.create_revision,
                    "mod_revision": event.mod_revision,
                    "version": event.version,
                    "lease": event.lease,
                    "prev_create_revision": event.prev_create_revision,
                    "prev_mod_revision": event.prev_mod_revision,
                    "prev_version": event.prev_version,
                    "prev_lease": event.prev_lease,
                }
            else:
                data = {
                    "key": subject,
                    "value": value_text,
                    "prev_value": prev_text,
                    "create_revision": event.create_revision,
                    "mod_revision": event.mod_revision,
                    "version": event.version,
                    "lease": event.lease,
                }
            if event.more:
                data["more"] = True
            if event.revision != revision:
                revision = event.revision
                revision_digits = b"%d" % revision
            index = event.index
            if index < _SMALL:
                id_tail = (_SNAPSHOT_IDS if op in SNAPSHOT_OPS else _CHANGE_IDS)[index]
                index_attribute = _INDEX_ATTRIBUTES[index]
            else:
                id_tail = b"%s%d" % (b"-s" if op in SNAPSHOT_OPS else b"-", index)
                index_attribute = b'","index":%d' % index
            if binary:
                headers = self._binary_headers(event, revision_digits, id_tail)
                records.append((headers, dumps(data)))
                continue
            records.append(
                join(
                    [
                        id_head,
                        revision_digits,
                        id_tail,
                        after_id[op],
                        subject_json,
                        timed,
                        revision_digits,
                        index_attribute,
                        before_data,
                        dumps(data),
                        b"}",
                    ]
                )
            )
        return records

    def _binary_headers(self, event: Event, revision_digits: bytes, id_tail: bytes) -> Headers:
        """The ``ce_`` headers of the common event (``_records``)."""
        return [
            self._specversion_header,
            ("ce_id", self._id_prefix_bytes + revision_digits + id_tail),
            self._source_header,
            ("ce_type", _TYPE_HEADERS[event.op]),
            # The subject is the key's own text, so its UTF-8 is the key's own bytes.
            ("ce_subject", event.key),
            ("ce_time", self._stamp_bytes),
            self._content_type_header,
            ("ce_revision", revision_digits),
            ("ce_index", b"%d" % event.index),
            self._pipeline_header,
        ]

    def _any(self, event: Event, *, binary: bool, stamp: str) -> Any:
        """The general path's record of ``event`` in the content mode asked."""
        return self._binary_any(event) if binary else self._encode_any(event, stamp=stamp)

    def _encode_any(self, event: Event, *, stamp: str) -> bytes:
        """``encode`` for every event, with ``stamp`` as its ``time``."""
        data, subject, subject_is_base64 = self._data(event)
        document: dict[str, Any] = {
            "specversion": SPECVERSION,
            "id": self._id(event),
            "source": self.source,
            "type": TYPES[event.op],
        }
        if subject is not None:
            document["subject"] = subject
        document["time"] = stamp
        document["datacontenttype"] = DATA_CONTENT_TYPE
        document["revision"] = str(event.revision)
        document["index"] = event.index
        document["pipeline"] = self.pipeline
        if subject_is_base64:
            document["keyencoding"] = KEY_ENCODING_BASE64
        if event.reason is not None:
            document["reason"] = event.reason
        document.update(omitted_attributes(event))
        document["data"] = data
        return orjson.dumps(document)

    def _binary_any(self, event: Event) -> tuple[Headers, bytes]:
        """``binary`` for every event."""
        data, subject, subject_is_base64 = self._data(event)
        headers = [
            self._specversion_header,
            ("ce_id", self._id(event).encode()),
            self._source_header,
            ("ce_type", _TYPE_HEADERS[event.op]),
        ]
        if subject is not None:
            headers.append(("ce_subject", subject.encode()))
        headers.append(("ce_time", self._now().encode()))
        headers.append(self._content_type_header)
        headers.append(("ce_revision", b"%d" % event.revision))
        headers.append(("ce_index", b"%d" % event.index))
        headers.append(self._pipeline_header)
        if subject_is_base64:
            headers.append(("ce_keyencoding", KEY_ENCODING_BASE64.encode()))
        if event.reason is not None:
            headers.append(("ce_reason", event.reason.encode()))
        for name, size in omitted_attributes(event).items():
            headers.append((HEADER_PREFIX + name, b"%d" % size))
        return headers, orjson.dumps(data)

    def _data(self, event: Event) -> tuple[dict[str, Any], str | None, bool]:
        """``data`` of any event, its subject (None: none) and whether that is base64."""
        key, prev = event.key, event.prev_value
        data: dict[str, Any] = {}
        lists = embed_fields(data, {"key": key}, mode=ValuesMode.BYTES)
        embedded = embed_fields(data, {"value": event.value, "prev_value": prev}, mode=self._values)
        for name, names in embedded.items():
            lists.setdefault(name, []).extend(names)
        data["create_revision"] = event.create_revision
        data["mod_revision"] = event.mod_revision
        data["version"] = event.version
        data["lease"] = event.lease
        omitted = event.omitted_bytes
        had_prev = prev is not None or (omitted is not None and omitted.prev_value is not None)
        if had_prev and (event.op is _UPDATE or event.op is _DELETE):
            data["prev_create_revision"] = event.prev_create_revision
            data["prev_mod_revision"] = event.prev_mod_revision
            data["prev_version"] = event.prev_version
            data["prev_lease"] = event.prev_lease
        if event.more:
            data["more"] = True
        data.update(lists)
        return (data, *subject_of(key))

    def _id(self, event: Event) -> str:
        if event.op in SNAPSHOT_OPS:
            return f"{self._id_prefix}{event.revision}-s{event.index}"
        return f"{self._id_prefix}{event.revision}-{event.index}"

    def _now(self) -> str:
        millisecond = time_ns() // 1_000_000
        if millisecond != self._millisecond:
            self._tick(millisecond)
        return self._stamp

    def _tick(self, millisecond: int) -> None:
        """Format ``time`` for a new millisecond. A record made meanwhile on another thread
        may pair the previous stamp with it: one millisecond old, which is harmless."""
        seconds, fraction = divmod(millisecond, 1000)
        second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        self._stamp = f"{second}.{fraction:03d}Z"
        self._stamp_bytes = self._stamp.encode()
        # What follows the subject up to the revision's digits, time included.
        self._timed = b',"time":"%s","datacontenttype":"application/json","revision":"' % (
            self._stamp_bytes
        )
        self._millisecond = millisecond

    # -- decoding ---------------------------------------------------------------------------

    def decode(self, record: bytes) -> Event:
        """The event of a structured-mode record; ValueError if it is not one of ours."""
        document = orjson.loads(record)
        if not isinstance(document, dict):
            raise ValueError("a CloudEvents record is a JSON object")
        if "data" not in document:
            raise ValueError("the CloudEvent has no data")
        return self._event(document, document["data"])

    def decode_binary(
        self, headers: Iterable[tuple[str, bytes | str | None]], value: bytes | None
    ) -> Event:
        """The inverse of ``binary``: headers other than ``ce_*`` (such as a sink's own) are
        ignored. ValueError if the record is not one of ours."""
        attributes: dict[str, Any] = {}
        for name, raw in headers:
            if raw is None:
                continue
            lowered = name.lower()
            if lowered.startswith(HEADER_PREFIX):
                text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
                attributes[lowered[len(HEADER_PREFIX) :]] = text
            elif lowered == CONTENT_TYPE_HEADER:
                attributes["datacontenttype"] = (
                    raw.decode("utf-8") if isinstance(raw, bytes) else raw
                )
        if value is None:
            raise ValueError("a binary-mode CloudEvent of ours always has data")
        return self._event(attributes, orjson.loads(value))

    def _event(self, attributes: dict[str, Any], data: Any) -> Event:
        if attributes.get("specversion") != SPECVERSION:
            raise ValueError(f"not a CloudEvents {SPECVERSION} event")
        type_name = attributes.get("type")
        op = _OPS.get(type_name) if isinstance(type_name, str) else None
        if op is None:
            raise ValueError(f"not an etcd-bridge event type: {type_name!r}")
        if not isinstance(data, dict):
            raise ValueError("data is not a JSON object")
        try:
            key = extract_fields(data, ("key",), mode=ValuesMode.BYTES)["key"]
            if key is None:
                raise ValueError("data has no key")
            subject = attributes.get("subject")
            if (
                subject is not None
                and _subject_bytes(
                    subject, is_base64=attributes.get("keyencoding") == KEY_ENCODING_BASE64
                )
                != key
            ):
                raise ValueError("subject and data.key disagree")
            values = extract_fields(data, _VALUE_FIELDS, mode=self._values)
            reason = attributes.get("reason")
            omitted = [attributes.get(name) for name in OMITTED_ATTRIBUTES]
            return Event(
                revision=_integer(attributes["revision"]),
                index=_integer(attributes["index"]),
                type=_EVENT_TYPES[op],
                op=op,
                key=key,
                value=values["value"],
                prev_value=values["prev_value"],
                mod_revision=_integer(data["mod_revision"]),
                create_revision=_integer(data["create_revision"]),
                version=_integer(data["version"]),
                lease=_integer(data["lease"]),
                reason=None if reason is None else SnapshotReason(reason),
                more=data.get("more") is True,
                prev_mod_revision=_integer(data.get("prev_mod_revision", 0)),
                prev_create_revision=_integer(data.get("prev_create_revision", 0)),
                prev_version=_integer(data.get("prev_version", 0)),
                prev_lease=_integer(data.get("prev_lease", 0)),
                omitted_bytes=None
                if omitted == [None, None]
                else OmittedBytes(*(None if size is None else _integer(size) for size in omitted)),
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not an etcd-bridge CloudEvent: {error!r}") from error


def omitted_attributes(event: Event) -> dict[str, int]:
    """The extension attributes of an event delivered without its values: the size of each
    one left out (an Integer: etcd limits a value far below 2^31 bytes)."""
    omitted = event.omitted_bytes
    if omitted is None:
        return {}
    sizes = zip(OMITTED_ATTRIBUTES, (omitted.value, omitted.prev_value), strict=True)
    return {name: size for name, size in sizes if size is not None}


def _integer(value: Any) -> int:
    """An integer as JSON or a header carries it: a number, or its decimal digits."""
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"not an integer: {value!r}")


def _subject_bytes(subject: Any, *, is_base64: bool) -> bytes:
    if not isinstance(subject, str):
        raise ValueError("subject is not a string")
    return decode_field(subject, is_base64=is_base64)
