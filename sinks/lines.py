"""JSON lines: how a batch of events becomes bytes for the stdout and file sinks."""

from collections.abc import Sequence

from bridge.events import Event


def encode_lines(batch: Sequence[Event]) -> bytes:
    """One JSON object per event, each ending in a newline, in batch order."""
    return b"".join([event.to_json() + b"\n" for event in batch])
