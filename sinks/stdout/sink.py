"""The ``stdout`` sink: JSON lines on standard output, the embedded default.

What went into a pipe cannot be read back, so the position lives in a checkpoint file saved
after each flush (``sinks.stdout.checkpoint``): at-least-once. A crash between a flush and its
checkpoint repeats that batch on restart; use the ``file`` sink for exactly once.
"""

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Self

from pydantic import BaseModel, Field

from bridge.errors import SinkRejectedError
from bridge.events import Event
from bridge.sink import Sink, SinkContext
from sinks.lines import encode_lines
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

    def __init__(self, *, checkpoint: FileCheckpoint, stream: BinaryIO | None = None) -> None:
        self._checkpoint = checkpoint
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._last_written: Event | None = None

    @classmethod
    def from_settings(cls, settings: StdoutSettings, *, context: SinkContext) -> Self:
        checkpoint = FileCheckpoint(
            directory=settings.checkpoint_dir, pipeline=context.pipeline, sink=cls.name
        )
        return cls(checkpoint=checkpoint)

    def open(self) -> Event | None:
        return self._checkpoint.load()

    def write(self, batch: Sequence[Event]) -> None:
        try:
            self._stream.write(encode_lines(batch))
        except BrokenPipeError as error:
            raise SinkRejectedError("stdout: the reader closed the pipe") from error
        self._last_written = batch[-1]

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError as error:
            raise SinkRejectedError("stdout: the reader closed the pipe") from error
        if self._last_written is not None:
            self._checkpoint.save(self._last_written)
