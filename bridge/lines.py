"""The end of a file of lines, read backwards: where the file sink and the dead-letter file
find their last record without reading the whole file, so opening costs the same whatever
its size. A line is complete when its newline is there; what follows the last newline is a
torn write (a crash in the middle of one), never acknowledged."""

import os

_READ_BACK_BYTES = 64 * 1024


def last_complete_line(descriptor: int, *, cut: bool) -> bytes | None:
    """The last complete line without its newline, if any; with ``cut``, truncate a torn
    write after it first (the caller fsyncs when the cut must outlive a power loss)."""
    size = os.fstat(descriptor).st_size
    end = _past_last_newline(descriptor, before=size)
    if cut and end != size:
        os.ftruncate(descriptor, end)
    if end == 0:
        return None
    start = _past_last_newline(descriptor, before=end - 1)
    return os.pread(descriptor, end - 1 - start, start)


def _past_last_newline(descriptor: int, *, before: int) -> int:
    """The offset just past the last newline in ``[0, before)``, or 0 when there is none."""
    end = before
    while end > 0:
        start = max(0, end - _READ_BACK_BYTES)
        found = os.pread(descriptor, end - start, start).rfind(b"\n")
        if found != -1:
            return start + found + 1
        end = start
    return 0
