"""The ``stdout`` sink: JSON lines on standard output, the embedded default.

What went into a pipe cannot be read back, so the position lives in a checkpoint file saved
after each flush (``bridge.checkpoint``): at-least-once. A crash between a flush and its
checkpoint repeats that batch on restart; use the ``file`` sink for exactly once.
"""

import sys
from collections.abc import Sequence
from typing import BinaryIO, Self

from bridge.checkpoint import FileCheckpoint
from bridge.errors import SinkRejectedError
from bridge.events import Event
from config.settings import Settings
from sinks.base import Sink
from sinks.lines import encode_lines


class StdoutSink(Sink):
    """JSON lines on stdout, position in a checkpoint file."""

    name = "stdout"
    guarantee = "at-least-once"

    def __init__(self, *, checkpoint: FileCheckpoint, stream: BinaryIO | None = None) -> None:
        self._checkpoint = checkpoint
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._last_written: Event | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        checkpoint = FileCheckpoint(
            directory=settings.checkpoint_dir, pipeline=settings.name, sink=cls.name
        )
        return cls(checkpoint=checkpoint)

    def open(self) -> Event | None:
        return self._checkpoint.load()

    def write(self, batch: Sequence[Event]) -> None:
        try:
            self._stream.write(encode_lines(batch))
        except BrokenPipeError:
            raise SinkRejectedError("stdout: the reader closed the pipe") from None
        self._last_written = batch[-1]

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise SinkRejectedError("stdout: the reader closed the pipe") from None
        if self._last_written is not None:
            self._checkpoint.save(self._last_written)
