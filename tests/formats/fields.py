"""What the tests' consumers of every format share: the ``Change`` a record describes, and a
value field read back by the rules of docs/formats.md ("Values"), written without
``bridge.formats.values`` so that a mistake there is not mirrored here."""

import base64
import json
from dataclasses import dataclass
from typing import Any

from bridge.events import Op, Position
from config.output import ValuesMode


@dataclass(frozen=True)
class Change:
    """What a consumer learns from one record."""

    position: Position
    op: Op
    key: bytes
    value: bytes | None
    """As carried: a value embedded as JSON (``values=json``) comes back re-serialized
    compactly (compare it with ``canonical_json`` of the bytes written to etcd)."""
    prev_value: bytes | None = None


def canonical_json(raw: bytes) -> bytes:
    """``raw`` (a JSON document) as ``field_bytes`` returns it embedded."""
    return compact(json.loads(raw))


def field_bytes(data: dict[str, Any], name: str, *, values: ValuesMode) -> bytes | None:
    """Field ``name`` of ``data`` (a record's data, or a row) as bytes: base64 when named in
    ``b64``, text when not embedded as JSON, else the JSON value re-serialized compactly."""
    embedded = data.get(name)
    if embedded is None:
        return None
    if name in data.get("b64", ()):
        return base64.b64decode(embedded, validate=True)
    if isinstance(embedded, str) and (values is ValuesMode.BYTES or name in data.get("raw", ())):
        return embedded.encode()
    return compact(embedded)


def compact(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
