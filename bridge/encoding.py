"""Byte fields to JSON and back, without mangling anything.

etcd keys and values are arbitrary bytes. A field that decodes as UTF-8 travels as a JSON
string; any other field travels base64-encoded and its name is listed in the event's ``b64``
array, so a consumer knows exactly which fields to decode. ``decode_field`` is the inverse and
round-trips every byte string exactly.
"""

import base64
import binascii


def encode_field(raw: bytes) -> tuple[str, bool]:
    """Return the JSON text for ``raw`` and whether it had to be base64-encoded."""
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), True


def decode_field(text: str, *, is_base64: bool) -> bytes:
    """Return the original bytes of a field written by ``encode_field``."""
    if is_base64:
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as error:
            raise ValueError(f"field is marked base64 but is not: {error}") from error
    return text.encode("utf-8")


def printable_key(raw: bytes, *, limit: int = 120) -> str:
    """A key as it may appear in a log line or error: UTF-8 when it is, escaped bytes otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = repr(raw)
    return text if len(text) <= limit else text[:limit] + "..."
