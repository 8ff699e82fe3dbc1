"""A CloudEvents consumer we did not write: sink records read back through the CloudEvents SDK.

For the tests of the ``cloudevents`` format, unit and end-to-end alike. A record as a sink
holds it (structured JSON bytes; or a Kafka record's headers, key and value, in either content
mode) becomes the SDK's ``CloudEvent``, parsed by the SDK's JSON event format and Kafka
protocol binding, and that becomes a ``Change``: the position, op, key and value, read by the
rules of docs/formats.md ("cloudevents") alone, never by ``bridge.formats.cloudevents``, so
that a mistake in our encoder is not mirrored by our own decoder.

The SDK's Kafka binding turns a record's key into the ``partitionkey`` attribute by decoding
it as UTF-8, and raises on any other key. Our record key is the etcd key, which may be any
bytes, so a non-UTF-8 key is not handed to the SDK (the key travels in ``subject`` anyway).
"""

import base64
from collections.abc import Iterable, Mapping

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import kafka
from cloudevents.core.formats.json import JSONFormat

from bridge.events import Op, Position
from config.output import ValuesMode
from tests.formats.fields import Change, field_bytes

TYPE_PREFIX = "io.etcd.bridge."


def from_structured(record: bytes) -> BaseCloudEvent:
    """The SDK's event for a structured-mode record (``application/cloudevents+json``)."""
    return JSONFormat().read(None, record)


def from_kafka(
    headers: Mapping[str, bytes] | Iterable[tuple[str, bytes | None]] | None,
    value: bytes | None,
    *,
    key: bytes | None = None,
) -> BaseCloudEvent:
    """The SDK's event for a Kafka record in either content mode: the SDK tells them apart by
    its ``ce_`` headers. Headers other than the binding's (a sink's own) are left in."""
    items = headers.items() if isinstance(headers, Mapping) else headers or ()
    message = kafka.KafkaMessage(
        headers={name: raw for name, raw in items if raw is not None},
        key=key if key is not None and _is_utf8(key) else None,
        value=value or b"",
    )
    return kafka.from_kafka(message, JSONFormat())


def change_of(event: BaseCloudEvent, *, values: ValuesMode = ValuesMode.BYTES) -> Change:
    """The change an SDK event describes, per docs/formats.md."""
    data = event.get_data()
    if not isinstance(data, dict):
        raise ValueError(f"data is not a JSON object: {data!r}")
    kind = event.get_type()
    if not kind.startswith(TYPE_PREFIX):
        raise ValueError(f"not an etcd-bridge event type: {kind}")
    subject = event.get_subject()
    if subject is None:
        key = field_bytes(data, "key", values=ValuesMode.BYTES)
        if key is None:
            raise ValueError("an event without subject must have data.key")
    elif event.get_extension("keyencoding") == "base64":
        key = base64.b64decode(subject, validate=True)
    else:
        key = subject.encode()
    return Change(
        position=Position(int(event.get_extension("revision")), int(event.get_extension("index"))),
        op=Op(kind.removeprefix(TYPE_PREFIX)),
        key=key,
        value=field_bytes(data, "value", values=values),
        prev_value=field_bytes(data, "prev_value", values=values),
    )


def read_structured(record: bytes, *, values: ValuesMode = ValuesMode.BYTES) -> Change:
    return change_of(from_structured(record), values=values)


def read_kafka(
    headers: Mapping[str, bytes] | Iterable[tuple[str, bytes | None]] | None,
    value: bytes | None,
    *,
    key: bytes | None = None,
    values: ValuesMode = ValuesMode.BYTES,
) -> Change:
    return change_of(from_kafka(headers, value, key=key), values=values)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True
