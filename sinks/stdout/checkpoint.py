"""A position kept in a small file, replaced atomically.

For sinks that cannot hold their own position (stdout: what was written to a pipe cannot be
read back), the last event delivered is saved here after the sink's flush. Saving writes a
temporary file, fsyncs it and renames it over the old one, so a crash leaves either the old
or the new checkpoint, never a torn one (a full disk fails the temporary file, which is
removed, and leaves the old checkpoint). Such a sink is at-least-once: a crash between the
flush and the save replays that batch.
"""

import os
from pathlib import Path

from bridge.errors import SinkUnavailableError
from bridge.events import Event
from config.errors import ConfigError


class FileCheckpoint:
    """The last delivered event of one pipeline and sink, in ``<dir>/<pipeline>.<sink>.json``."""

    def __init__(self, *, directory: Path, pipeline: str, sink: str) -> None:
        self.path = directory / f"{pipeline}.{sink}.json"

    def load(self) -> Event | None:
        try:
            content = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return Event.from_json(content)
        except (ValueError, KeyError) as error:
            raise ConfigError(
                f"checkpoint {self.path} is unreadable ({error}); remove it to start over"
            ) from error

    def save(self, event: Event) -> None:
        """Replace the checkpoint with ``event``; SinkUnavailableError (the old checkpoint
        kept) when the directory cannot take it: full, read-only, gone."""
        temporary = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as handle:
                handle.write(event.to_json())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise SinkUnavailableError(
                f"stdout: cannot save the checkpoint {self.path}: {error.strerror}; "
                "BRIDGE_STDOUT__CHECKPOINT_DIR must be writable and have room"
            ) from error
