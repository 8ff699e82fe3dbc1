"""Values (and previous values) inside a record, for every format alike.

With ``BRIDGE_VALUES=bytes`` a value travels as UTF-8 text, or base64 and named in the
record's ``b64`` list. With ``json``, a value that parses as JSON (UTF-8, one JSON document)
is embedded as that JSON value, which is what consumers of Kubernetes-style configuration want
to query; a value that does not parse travels as with ``bytes`` and is named in the record's
``raw`` list, so a JSON string value (``"abc"`` with its quotes in etcd) and a plain text
value (``abc``) are never confused. An embedded value is re-serialized by whoever reads it:
its bytes (whitespace, key order) are not kept, its meaning is.

Keys always travel as with ``bytes``.
"""

from typing import Any

import orjson

from bridge.encoding import decode_field, encode_field
from config.output import ValuesMode


def embed(raw: bytes, *, mode: ValuesMode) -> tuple[Any, str | None]:
    """The JSON value for ``raw`` and the list it must be named in (``b64``, ``raw``, or
    None), so that ``extract`` gets the value back."""
    if mode is ValuesMode.JSON:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        # A JSON ``null`` value travels as text: embedded, it would read as "no value".
        if parsed is not None:
            return parsed, None
        text, is_base64 = encode_field(raw)
        return text, "b64" if is_base64 else "raw"
    text, is_base64 = encode_field(raw)
    return text, "b64" if is_base64 else None


def extract(embedded: Any, *, mode: ValuesMode, base64: bool, raw: bool) -> bytes:
    """The bytes ``embed`` was given (an embedded JSON value: re-serialized, see above)."""
    if base64 or (isinstance(embedded, str) and (raw or mode is ValuesMode.BYTES)):
        return decode_field(embedded, is_base64=base64)
    return orjson.dumps(embedded)


def embed_fields(
    document: dict[str, Any], fields: dict[str, bytes | None], *, mode: ValuesMode
) -> dict[str, list[str]]:
    """Set each of ``fields`` in ``document`` (None stays null); return the ``b64`` and
    ``raw`` lists naming the fields that need one, for the caller to add where its document
    keeps them."""
    lists: dict[str, list[str]] = {}
    for name, raw in fields.items():
        if raw is None:
            document[name] = None
            continue
        document[name], listed = embed(raw, mode=mode)
        if listed is not None:
            lists.setdefault(listed, []).append(name)
    return lists


def extract_fields(
    document: dict[str, Any], names: tuple[str, ...], *, mode: ValuesMode
) -> dict[str, bytes | None]:
    """The inverse of ``embed_fields`` for ``names``."""
    base64, raw = set(document.get("b64", ())), set(document.get("raw", ()))
    fields: dict[str, bytes | None] = {}
    for name in names:
        embedded = document.get(name)
        fields[name] = (
            None
            if embedded is None
            else extract(embedded, mode=mode, base64=name in base64, raw=name in raw)
        )
    return fields
