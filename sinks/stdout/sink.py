"""The ``stdout`` sink: JSON lines on standard output, the embedded default.

Each line is one record of the sink's format (``BRIDGE_STDOUT__FORMAT``, docs/formats.md);
the checkpoint file holds a native event whatever the format.

What went into a pipe cannot be read back, so the position lives in a checkpoint file saved
after each flush (``sinks.stdout.checkpoint``): at-least-once. A crash between a flush and its
checkpoint repeats that batch on restart; use the ``file`` sink for exactly once. For the
same reason it offers no reader (``etcd-bridge verify`` reports it as not verifiable).

A checkpoint that cannot be saved (a full disk) makes the flush fail as unavailable: the pump
reopens with backoff, and ``open()`` reports the last event this instance flushed to the
stream if the checkpoint lags behind it, so a full disk repeats nothing while the process
lives, and the checkpoint catches up once there is room.
"""

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, Self

from pydantic import BaseModel, Field

from bridge.errors import SinkRejectedError
from bridge.events import Event
from bridge.formats import EventFormat
from bridge.reader import NoReaderError
from bridge.sink import NATIVE, Sink, SinkContext
from config.output import FormatName
from sinks.stdout.checkpoint import FileCheckpoint


class StdoutSettings(BaseModel):
    """Where the stdout sink keeps its position (``BRIDGE_STDOUT__*``)."""

    checkpoint_dir: Path = Field(
        default=Path(".etcd-bridge"),
        description="Directory of the checkpoint file (<BRIDGE_NAME>.stdout.json) that holds "
        "the position, since what went into a pipe cannot be read back.",
    )


class StdoutSink(Sink):
    """JSON lines on stdout, position in a checkpoint file."""

    name = "stdout"
    settings_model = StdoutSettings
    guarantee = "at-least-once"
    formats = frozenset(FormatName)

    def __init__(
        self,
        *,
        checkpoint: FileCheckpoint,
        stream: BinaryIO | None = None,
        record_format: EventFormat = NATIVE,
    ) -> None:
        self._checkpoint = checkpoint
        self._format = record_format
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._last_written: Event | None = None
        self._last_flushed: Event | None = None
        """The last event flushed to the stream by this instance, saved or not."""

    @classmethod
    def from_settings(cls, settings: StdoutSettings, *, context: SinkContext) -> Self:
        checkpoint = FileCheckpoint(
            directory=settings.checkpoint_dir, pipeline=context.pipeline, sink=cls.name
        )
        return cls(checkpoint=checkpoint, record_format=context.format)

    @classmethod
    def reader(cls, settings: Any, *, context: SinkContext) -> NoReturn:
        raise NoReaderError(
            "the stdout sink writes to a pipe, which cannot be read back, and keeps only a "
            "checkpoint of its position"
        )

    def open(self) -> Event | None:
        saved = self._checkpoint.load()
        flushed = self._last_flushed
        if flushed is not None and (saved is None or saved.position < flushed.position):
            return flushed
        return saved

    def write(self, batch: Sequence[Event]) -> None:
        try:
            self._stream.write(self._format.encode_lines(batch))
        except BrokenPipeError as error:
            raise SinkRejectedError("stdout: the reader closed the pipe") from error
        self._last_written = batch[-1]

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError as error:
            raise SinkRejectedError("stdout: the reader closed the pipe") from error
        if self._last_written is not None:
            self._last_flushed = self._last_written
            self._checkpoint.save(self._last_written)
