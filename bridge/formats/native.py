"""The native format: docs/events.md, the bridge's own event document.

With ``values=bytes`` it is ``Event.to_json`` itself, bound directly as ``encode`` so that
the default costs no call more than before formats existed; with ``values=json`` the values
are embedded (``bridge.formats.values``) and the other fields are unchanged.
"""

import operator

import orjson

from bridge.events import Event
from bridge.formats.base import EventFormat, FormatContext
from bridge.formats.values import embed_fields, extract_fields
from config.output import FormatName, OutputSettings, ValuesMode

_VALUE_FIELDS = ("value", "prev_value")
_KEY = operator.attrgetter("key")
"""``record_key`` of the native format, the etcd key, without a Python call."""


class NativeFormat(EventFormat):
    """docs/events.md."""

    name = FormatName.NATIVE

    def __init__(self, context: FormatContext, output: OutputSettings) -> None:
        del output  # the native format has no options of its own
        self._values = context.values
        if context.values is ValuesMode.BYTES:
            # The default path: no wrapper call per event (a Kafka record asks for its key
            # and value, a line for its encoding, each time).
            self.encode = Event.to_json  # type: ignore[method-assign,assignment]
            self.record_value = Event.to_json  # type: ignore[method-assign,assignment]
            self.decode = Event.from_json  # type: ignore[method-assign,assignment]
        self.record_key = _KEY  # type: ignore[method-assign,assignment]

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
        """``Event.from_dict`` with the values read back as ``encode`` embedded them."""
        document = orjson.loads(record)
        fields = extract_fields(document, _VALUE_FIELDS, mode=self._values)
        document.update(value=None, prev_value=None)
        event = Event.from_dict(document)
        event.value, event.prev_value = fields["value"], fields["prev_value"]
        return event
