"""The native format: docs/events.md, the bridge's own event document.

With ``values=bytes`` it is ``Event.to_json`` itself, bound directly as ``encode`` so that
the default costs no call more than before formats existed; with ``values=json`` the values
are embedded (``bridge.formats.values``) and the other fields are unchanged.
"""

import orjson

from bridge.events import Event, EventType, Op, SnapshotReason
from bridge.formats.base import EventFormat, FormatContext
from bridge.formats.values import embed_fields, extract_fields
from config.output import FormatName, OutputSettings, ValuesMode

_VALUE_FIELDS = ("value", "prev_value")


class NativeFormat(EventFormat):
    """docs/events.md."""

    name = FormatName.NATIVE

    def __init__(self, context: FormatContext, output: OutputSettings) -> None:
        del output  # the native format has no options of its own
        self._values = context.values
        if context.values is ValuesMode.BYTES:
            # The default path: no wrapper call per event.
            self.encode = Event.to_json  # type: ignore[method-assign,assignment]
            self.decode = Event.from_json  # type: ignore[method-assign,assignment]

    def encode(self, event: Event) -> bytes:
        """``Event.to_dict`` with the values embedded by ``BRIDGE_VALUES``."""
        document = event.to_dict()
        key_is_base64 = "key" in document.pop("b64", ())
        lists = embed_fields(
            document, {"value": event.value, "prev_value": event.prev_value}, mode=self._values
        )
        if key_is_base64:
            lists["b64"] = ["key", *lists.get("b64", ())]
        document.update(lists)
        return orjson.dumps(document)

    def decode(self, record: bytes) -> Event:
        document = orjson.loads(record)
        fields = extract_fields(document, _VALUE_FIELDS, mode=self._values)
        key = extract_fields(document, ("key",), mode=ValuesMode.BYTES)["key"]
        if key is None:
            raise ValueError("event has no key")
        reason = document.get("reason")
        return Event(
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
        )
