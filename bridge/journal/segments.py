"""The log on disk: segment files of frames, recovered after a crash, bounded in bytes.

``<path>/<base>.seg`` holds frames (``bridge.journal.frames``) after a segment header: a
magic, the frame format's version, a digest of what the log is of (the pipeline's name and
watched keys: a log of other keys, or of another version, is dropped whole at open, and the
sinks catch up from etcd), and ``based_on``. ``base`` is the log's byte offset of the
segment's first frame, so that an offset names one frame in the whole log.

``based_on`` is what makes reading the log from a sink's tail safe: the segment, with those
after it, holds every change of the watched keys after revision ``based_on``. A segment is
only started after a whole revision (a watched change without ``more``, or a snapshot's end),
so ``based_on`` is the last revision of the one before it; the log's first segment has -1
and begins with a snapshot (``bridge.journal.recorder``), after whose revision everything
is held. Trimming removes whole segments from the front, so the log's ``based_on`` is always
its first segment's.

Recovery after ``kill -9`` or a power loss reads the last segment's frames and cuts at the
first that is torn (length or checksum), and drops any segment that does not follow its
predecessor byte for byte: the log then ends at its last intact frame, and its reader takes
etcd's history up again from there. The earlier segments were fsynced when they were closed.

Trimming: after each new segment, the oldest ones go while the log is over its disk budget,
and while every registered sink has durably passed them (``register``). A sink that had not
passed a trimmed segment finds its place gone (``JournalOverrunError``) and catches up from
etcd: the budget, not a slow sink, bounds the disk.
"""

import errno
import hashlib
import logging
import marshal
import os
import struct
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from bridge import metrics
from bridge.errors import JournalError, JournalOverrunError, JournalUnavailableError
from bridge.etcd import Chunk
from bridge.events import Event, EventType, Op, Position, SnapshotReason
from bridge.health import PipelineStats
from bridge.journal import frames
from bridge.journal.frames import HEADER_BYTES, FrameHeader, TornFrameError
from bridge.ownership import Owner, lock_file
from config.journal import JournalSettings

log = logging.getLogger(__name__)

_FORMAT = 1
_SEGMENT_HEADER = struct.Struct("<4sBB32sq")
"""Magic, frame format version, marshal's version, identity digest, ``based_on``."""
SEGMENT_HEADER_BYTES = _SEGMENT_HEADER.size
_MAGIC = b"EBJL"
_SUFFIX = ".seg"
LOCK_FILE = "lock"
"""The file in the log's directory whose lock says which live bridge holds the log."""
_READ_BUFFER = 1024 * 1024
_RECENT_BYTES = 8 * 1024 * 1024
"""Bytes of the latest chunks kept decoded in memory: a sink reading at the log's end takes
them as they are, so an event is decoded once however many sinks read it."""
_EVENT_OVERHEAD = 400
"""Bytes an event's Python objects take besides its keys and values, about."""
_END_OF_REVISION = Position(0, 2**62).index


def identity_digest(identity: str) -> bytes:
    """The digest of what a log is of, as written in each of its segments."""
    return hashlib.sha256(identity.encode("utf-8")).digest()


def completes_revision(event: Event) -> bool:
    """Whether everything of ``event``'s revision is out once it is: a watched change that no
    change of its revision follows, or a snapshot's end marker."""
    if event.op is Op.SNAPSHOT_END:
        return True
    return not event.more and event.op not in (Op.SNAPSHOT, Op.SNAPSHOT_BEGIN)


@dataclass
class _Segment:
    base: int
    path: Path
    based_on: int
    size: int = 0
    """Bytes of frames (the segment header excluded)."""
    first: Event | None = None
    last: Position | None = None

    @property
    def end(self) -> int:
        return self.base + self.size


@dataclass(frozen=True, slots=True)
class Start:
    """Where a sink reads the log from: the frame at ``offset``, events past ``after``."""

    offset: int
    after: Position | None
    initial: bool = False
    """The sink holds nothing: the log's first snapshot is its initial one, whatever reason
    the log took it for."""
    generation: int = 0


@dataclass
class _State:
    segments: list[_Segment] = field(default_factory=list)
    tail: Event | None = None
    synced: int = 0
    generation: int = 0
    failure: BaseException | None = None


class Journal:
    """The local log of one pipeline's changes; see the module docstring. One thread appends
    (``bridge.journal.recorder``), any number read (``bridge.journal.reading``)."""

    def __init__(
        self, settings: JournalSettings, *, identity: str, owner: Owner | None = None
    ) -> None:
        """``identity``: what the log is of (the pipeline and its keys); ``owner``: this
        instance, written in the directory's lock (default: this process)."""
        if settings.path is None:
            raise ValueError("the journal needs a directory")
        self.directory = settings.path
        self._owner = owner or Owner.this_process("")
        self._lock: int | None = None
        self._settings = settings
        self._digest = identity_digest(identity)
        self._changed = threading.Condition()
        self._state = _State()
        self._fd: int | None = None
        self._closed = threading.Event()
        self._syncer: threading.Thread | None = None
        self._recent: deque[tuple[int, int]] = deque()
        """(offset, bytes counted) of the latest frames, oldest first, for evicting them."""
        self._recent_frames: dict[int, tuple[Chunk, int]] = {}
        """The latest frames' chunks and next offsets, by offset: one lookup per frame read."""
        self._recent_bytes = 0
        self._readers: dict[int, PipelineStats] = {}

    # ---------------------------------------------------------------- opening and closing

    def open(self) -> Event | None:
        """Recover the log from its directory (see the module docstring); return the last
        event it holds, where its reader resumes etcd's history."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise JournalUnavailableError(
                f"BRIDGE_JOURNAL__PATH: cannot create {self.directory} ({error.strerror})"
            ) from error
        self._lock, holder = lock_file(self.directory / LOCK_FILE, self._owner)
        if self._lock is None:
            raise held_by_another(self.directory, holder)
        self._load(repair=True)
        self._publish()
        log.info(
            "journal opened",
            extra={
                "path": str(self.directory),
                "segments": len(self._state.segments),
                "bytes": self.size,
                "position": str(self._state.tail.position) if self._state.tail else "empty",
            },
        )
        if self._settings.fsync_interval:
            self._closed.clear()
            self._syncer = threading.Thread(target=self._sync, name="journal-fsync", daemon=True)
            self._syncer.start()
        return self._state.tail

    def survey(self) -> int:
        """Read the log's state from its directory as ``open`` would, changing nothing and
        taking no lock: for ``etcd-bridge check`` and ``status``, beside a running bridge (a
        frame it is writing reads as torn, and is left alone). Returns how many segment files
        are not this log's (of other keys or another version: ``open`` would drop them)."""
        paths = sorted(self.directory.glob(f"*{_SUFFIX}"))
        return len(paths) - len(self._load(repair=False, paths=paths))

    def _load(self, *, repair: bool, paths: list[Path] | None = None) -> list[_Segment]:
        """Take the segments in ``paths`` (default: the directory's) up to the first that is
        not this log's, each after the one before it, and its last event as the tail; with
        ``repair``, cut a torn end and delete what is not taken. Returns the segments."""
        segments: list[_Segment] = []
        tail: Event | None = None
        paths = sorted(self.directory.glob(f"*{_SUFFIX}")) if paths is None else paths
        for path in paths:
            recovered = self._recover(
                path,
                expected_base=segments[-1].end if segments else None,
                last=path == paths[-1],
                repair=repair,
            )
            if recovered is None:
                if repair:
                    self._remove_from(path)
                break
            segment, tail = recovered
            segments.append(segment)
        while segments and segments[-1].first is None:  # begun, nothing appended: drop it
            empty = segments.pop()
            if repair:
                empty.path.unlink()
            tail = None
            if segments:
                recovered = self._recover(
                    segments[-1].path, expected_base=None, last=True, repair=repair
                )
                if recovered is not None:
                    segments[-1], tail = recovered
        with self._changed:
            self._state.segments = segments
            self._state.tail = tail
        return segments

    def _sync(self) -> None:
        """Every ``fsync_interval``, fsync the segment being appended to, in a thread of its
        own: an fsync can take seconds on a busy disk, and the reader must meanwhile go on
        reading etcd's watch, or etcd drops a watcher that falls behind its compaction."""
        while not self._closed.wait(self._settings.fsync_interval):
            with self._changed:
                fd = None if self._fd is None else os.dup(self._fd)
            if fd is None:
                continue
            try:
                os.fsync(fd)
            except OSError as error:  # the next write reports a failing disk
                log.warning("journal fsync failed", extra={"error": error.strerror})
            finally:
                os.close(fd)

    def _recover(
        self, path: Path, *, expected_base: int | None, last: bool, repair: bool
    ) -> tuple[_Segment, Event | None] | None:
        """The segment at ``path`` (with ``repair``, its torn end cut), and its last event;
        None when it is not one of this log's (another identity or version, or not following
        the one before it). Only the ``last`` segment has its frames checked and decoded: the
        others were fsynced when the next one began."""
        base = int(path.stem)
        with open(path, "r+b" if repair else "rb") as file:
            based_on = self._read_segment_header(file.read(_SEGMENT_HEADER.size))
            if based_on is None or (expected_base is not None and base != expected_base):
                if expected_base is None and repair:
                    log.warning(
                        "journal is of other keys or another version: starting it afresh",
                        extra={"path": str(self.directory)},
                    )
                return None
            segment = _Segment(base=base, path=path, based_on=based_on)
            end = _SEGMENT_HEADER.size
            last_event = None
            for offset, size, chunk in _intact_frames(file, start=end, decode_all=last):
                if segment.first is None:
                    segment.first = chunk.events[0]
                last_event = chunk.events[-1]
                segment.last = last_event.position
                end = offset + size
            if repair and end != os.fstat(file.fileno()).st_size:
                log.warning(
                    "journal: cutting a torn write at its end",
                    extra={"path": str(path), "offset": end},
                )
                file.truncate(end)
                file.flush()
                os.fsync(file.fileno())
            segment.size = end - _SEGMENT_HEADER.size
        return segment, last_event

    def _read_segment_header(self, data: bytes) -> int | None:
        """The ``based_on`` of a segment header of this log, else None."""
        if len(data) != _SEGMENT_HEADER.size:
            return None
        magic, version, marshal_version, digest, based_on = _SEGMENT_HEADER.unpack(data)
        if (magic, version, marshal_version, digest) != (
            _MAGIC,
            _FORMAT,
            marshal.version,
            self._digest,
        ):
            return None
        return int(based_on)

    def _remove_from(self, path: Path) -> None:
        """Delete the segment at ``path`` and every later one."""
        for later in sorted(self.directory.glob(f"*{_SUFFIX}")):
            if later >= path:
                later.unlink()

    def close(self) -> None:
        """Release the open segment and the directory's lock; readers still reading see no
        more frames."""
        self._closed.set()
        if self._syncer is not None:
            self._syncer.join()
            self._syncer = None
        with self._changed:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None
            self._changed.notify_all()

    def discard(self) -> None:
        """Drop the whole log: etcd no longer has the history it continues (restored from a
        backup). Readers in it find their place gone and catch up from etcd."""
        with self._changed:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            for segment in self._state.segments:
                segment.path.unlink(missing_ok=True)
            self._state = _State(generation=self._state.generation + 1)
            self._recent.clear()
            self._recent_frames.clear()
            self._recent_bytes = 0
            self._changed.notify_all()
        self._publish()

    # ---------------------------------------------------------------- the writer's side

    @property
    def tail(self) -> Event | None:
        """The last event the log holds."""
        return self._state.tail

    @property
    def size(self) -> int:
        """Bytes of frames held."""
        return sum(segment.size for segment in self._state.segments)

    def append(self, chunk: Chunk) -> None:
        """Add ``chunk``, whose events all follow the tail; JournalUnavailableError if the
        disk refuses it (nothing of it is then kept)."""
        data = frames.encode(chunk)
        with self._changed:
            segment, fd = self._segment_for_append()
            try:
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                if not self._settings.fsync_interval:
                    os.fsync(fd)
            except OSError as error:
                os.ftruncate(fd, _SEGMENT_HEADER.size + segment.size)
                raise JournalUnavailableError(
                    f"the journal at {self.directory} cannot be written ({error.strerror}); "
                    "free space there; the sinks wait meanwhile"
                ) from error
            offset = segment.end
            segment.size += len(data)
            self._remember(offset, len(data), chunk)
            if segment.first is None:
                segment.first = chunk.events[0]
            segment.last = chunk.events[-1].position
            self._state.tail = chunk.events[-1]
            self._changed.notify_all()
        self._publish()

    def _segment_for_append(self) -> tuple[_Segment, int]:
        """The segment to append to and its descriptor: the last one, or a new one when the
        last is full and the tail completes its revision (then the oldest may be trimmed)."""
        state = self._state
        if state.segments:
            current = state.segments[-1]
            tail = state.tail
            full = current.size >= self._settings.segment_bytes
            if not full or tail is None or not completes_revision(tail):
                if self._fd is None:
                    self._fd = os.open(current.path, os.O_WRONLY | os.O_APPEND)
                return current, self._fd
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
            based_on = tail.revision
        else:
            based_on = -1 if state.tail is None else state.tail.revision
        base = state.segments[-1].end if state.segments else 0
        path = self.directory / f"{base:020d}{_SUFFIX}"
        segment = _Segment(base=base, path=path, based_on=based_on)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            os.write(
                fd, _SEGMENT_HEADER.pack(_MAGIC, _FORMAT, marshal.version, self._digest, based_on)
            )
        except OSError as error:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise JournalUnavailableError(
                f"the journal at {self.directory} cannot start a segment ({error.strerror})"
            ) from error
        self._fd = fd
        state.segments.append(segment)
        self._trim()
        return segment, fd

    def _trim(self) -> None:
        """Remove the oldest segments while over budget or passed by every sink."""
        state = self._state
        slowest = self._slowest_reader()
        while len(state.segments) > 1:
            oldest = state.segments[0]
            over = sum(s.size for s in state.segments) > self._settings.max_bytes
            passed = slowest is not None and oldest.last is not None and oldest.last < slowest
            if not (over or passed):
                return
            if over and not passed:
                log.warning(
                    "journal over its disk budget: trimming a segment a sink has not passed "
                    "(it will catch up from etcd)",
                    extra={"path": str(oldest.path), "max_bytes": self._settings.max_bytes},
                )
            oldest.path.unlink(missing_ok=True)
            state.segments.pop(0)
            while self._recent and self._recent[0][0] < state.segments[0].base:
                self._forget_oldest()

    def _slowest_reader(self) -> Position | None:
        """The lowest durable position of the registered sinks; None while one holds
        nothing yet (it may need the log's first snapshot) or none is registered."""
        positions = [stats.position for stats in self._readers.values()]
        if not positions or any(position is None for position in positions):
            return None
        return min(position for position in positions if position is not None)

    def _remember(self, offset: int, size: int, chunk: Chunk) -> None:
        """Keep the frame at ``offset`` decoded, counting what its objects take in memory
        (an event's objects weigh some hundreds of bytes besides its keys and values)."""
        weight = max(chunk.size, size) + _EVENT_OVERHEAD * len(chunk.events)
        self._recent.append((offset, weight))
        self._recent_frames[offset] = (chunk, offset + size)
        self._recent_bytes += weight
        while self._recent_bytes > _RECENT_BYTES and len(self._recent) > 1:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        offset, weight = self._recent.popleft()
        del self._recent_frames[offset]
        self._recent_bytes -= weight

    def publish_synced(self, revision: int) -> None:
        """etcd has sent every change up to ``revision``: readers at the end may say so."""
        with self._changed:
            self._state.synced = max(self._state.synced, revision)
            self._changed.notify_all()

    def fail(self, error: BaseException | None) -> None:
        """The reader stopped for good with ``error`` (None: it is running again): every
        sink reading the log raises it rather than wait for frames that will not come."""
        with self._changed:
            self._state.failure = error
            self._changed.notify_all()

    @property
    def revisions(self) -> tuple[int, int]:
        """The revisions of the first and the last event the log holds (0, 0 when none)."""
        segments, tail = self._state.segments, self._state.tail
        first = next((s.first for s in segments if s.first is not None), None)
        if first is None or tail is None:
            return 0, 0
        return first.revision, tail.revision

    def _publish(self) -> None:
        metrics.JOURNAL_BYTES.set(self.size)
        first, last = self.revisions
        metrics.JOURNAL_FIRST_REVISION.set(first)
        metrics.JOURNAL_LAST_REVISION.set(last)

    # ---------------------------------------------------------------- the readers' side

    def register(self, stats: PipelineStats) -> None:
        """Count ``stats.position`` (a sink's durable tail) as a reader's, for trimming."""
        with self._changed:
            self._readers[id(stats)] = stats

    def unregister(self, stats: PipelineStats) -> None:
        with self._changed:
            self._readers.pop(id(stats), None)

    def start_for(self, tail: Event | None) -> Start | None:
        """Where a sink whose durable tail is ``tail`` reads on in the log, or None when the
        log does not hold what follows it (then it catches up from etcd)."""
        with self._changed:
            state = self._state
            generation = state.generation
            segments = list(state.segments)
            if tail is None:
                if not segments or segments[0].first is None:
                    if state.tail is not None:
                        return None
                    return Start(self._end(), None, initial=True, generation=generation)
                first = segments[0].first
                if first.op is Op.SNAPSHOT_BEGIN:
                    return Start(segments[0].base, None, initial=True, generation=generation)
                return None
            based_on = self._based_on(segments)
            if based_on is None:
                return None
            end = self._end()
        if completes_revision(tail):
            if tail.revision < based_on:
                return None
            after = Position(tail.revision, _END_OF_REVISION)
            return Start(self._first_frame_past(segments, after, end), after, generation=generation)
        found = self._frame_holding(segments, tail)
        if found is None:
            return None
        opening = segments[0].first
        initial = (  # inside the log's first snapshot, which the sink took as its initial one
            opening is not None
            and opening.op is Op.SNAPSHOT_BEGIN
            and opening.revision == tail.revision
            and tail.op in (Op.SNAPSHOT_BEGIN, Op.SNAPSHOT)
            and tail.reason in (None, SnapshotReason.INITIAL)
        )
        return Start(found, tail.position, initial=initial, generation=generation)

    def continues(self, tail: Event) -> bool:
        """Whether the log holds everything after ``tail``, a whole revision: cheap, for a
        sink catching up from etcd to ask after every chunk before ``start_for``."""
        with self._changed:
            based_on = self._based_on(self._state.segments)
        return based_on is not None and based_on <= tail.revision and completes_revision(tail)

    def trimmed_past(self, tail: Event | None) -> bool:
        """Whether the log once held what follows ``tail`` and trimmed it: the sink fell
        behind the log's start (a fresh log never held it)."""
        with self._changed:
            segments = self._state.segments
            if not segments or segments[0].based_on < 0:
                return False
            return tail is None or tail.revision < segments[0].based_on

    @staticmethod
    def _based_on(segments: list[_Segment]) -> int | None:
        if not segments:
            return None
        first = segments[0]
        if first.based_on >= 0:
            return first.based_on
        return None if first.first is None else first.first.revision

    def _end(self) -> int:
        segments = self._state.segments
        return segments[-1].end if segments else 0

    def _first_frame_past(self, segments: list[_Segment], after: Position, end: int) -> int:
        """The offset of the first frame holding an event past ``after`` (the end if none)."""
        for segment in segments:
            if segment.last is None or segment.last <= after:
                continue
            for offset, header in self._headers(segment):
                if header.last > after:
                    return offset
        return end

    def _frame_holding(self, segments: list[_Segment], tail: Event) -> int | None:
        """The offset of the frame holding ``tail`` itself (same position, operation and
        key: the same stream), or None."""
        position = tail.position
        for segment in segments:
            if segment.first is None or segment.last is None:
                continue
            if not segment.first.position <= position <= segment.last:
                continue
            for offset, header in self._headers(segment):
                if header.first <= position <= header.last:
                    with open(segment.path, "rb") as file:
                        file.seek(_SEGMENT_HEADER.size + offset - segment.base)
                        chunk, _size = read_frame(file)
                    held = next((e for e in chunk.events if e.position == position), None)
                    if held is not None and (held.op, held.key) == (tail.op, tail.key):
                        return offset
                    return None
        return None

    def _headers(self, segment: _Segment) -> Iterator[tuple[int, FrameHeader]]:
        """The frames' offsets (in the log) and headers of ``segment``, as far as held."""
        try:
            file = open(segment.path, "rb", buffering=_READ_BUFFER)
        except FileNotFoundError:
            return
        with file:
            file.seek(_SEGMENT_HEADER.size)
            offset = segment.base
            end = segment.end
            while offset < end:
                data = file.read(HEADER_BYTES)
                if len(data) < HEADER_BYTES:
                    return
                header = frames.read_header(data)
                yield offset, header
                file.seek(header.length, os.SEEK_CUR)
                offset += header.size

    def wait(self, offset: int, *, generation: int, synced: int, timeout: float) -> None:
        """Wait until the log holds more than ``offset``, a newer synced revision than
        ``synced``, a failure, or ``timeout``; raise the failure, or JournalOverrunError if
        the log was started afresh since ``generation``."""
        with self._changed:
            self._changed.wait_for(
                lambda: (
                    self._end() > offset
                    or self._state.synced > synced
                    or self._state.failure is not None
                    or self._state.generation != generation
                ),
                timeout,
            )
            self._check(generation)

    def _check(self, generation: int) -> None:
        state = self._state
        if state.failure is not None:
            raise state.failure
        if state.generation != generation:
            raise JournalOverrunError("the journal was started afresh")

    def progress(self) -> tuple[int, int]:
        """The offset past the last frame, and the latest synced revision."""
        with self._changed:
            return self._end(), self._state.synced

    def recent(self, offset: int) -> tuple[Chunk, int] | None:
        """The chunk of the frame at ``offset`` and the next frame's offset, when that frame
        is among the latest ones kept decoded in memory."""
        with self._changed:
            return self._recent_frames.get(offset)

    def segment_at(self, offset: int, *, generation: int) -> tuple[Path, int, int]:
        """The path, base and current end of the segment holding the frame at ``offset``;
        JournalOverrunError when it is gone (trimmed, or the log started afresh since
        ``generation``), or the failure that stopped the log's reader."""
        with self._changed:
            self._check(generation)
            for segment in self._state.segments:
                if segment.base <= offset < segment.end:
                    return segment.path, segment.base, segment.end
        raise JournalOverrunError(f"journal offset {offset} is no longer held")


def held_by_another(directory: Path, holder: Owner | None) -> JournalError:
    """The error of a log directory whose lock another live bridge holds (``holder``: the
    owner it wrote there, None if unreadable)."""
    return JournalError(
        f"BRIDGE_JOURNAL__PATH: {directory} is the journal of another bridge "
        f"({holder or 'unknown'}); give each instance a directory of its own"
    )


def read_frame(file: BinaryIO) -> tuple[Chunk, int]:
    """The chunk of the frame at ``file``'s position and the frame's size; TornFrameError
    when it is not whole and intact."""
    header_bytes = file.read(HEADER_BYTES)
    if len(header_bytes) < HEADER_BYTES:
        raise TornFrameError("the segment ends inside a frame's header")
    header = frames.read_header(header_bytes)
    try:
        chunk = frames.decode(header_bytes, file.read(header.length))
    except (ValueError, EOFError, TypeError) as error:
        raise TornFrameError(str(error)) from error
    return chunk, header.size


def _intact_frames(
    file: BinaryIO, *, start: int, decode_all: bool
) -> Iterator[tuple[int, int, Chunk]]:
    """The intact frames of an open segment from ``start`` (file offsets), up to the first
    torn one, decoded; without ``decode_all`` only the first is, and the others are a chunk
    of their last event alone, from their headers."""
    file.seek(start)
    offset = start
    while True:
        if offset == start or decode_all:
            try:
                chunk, size = read_frame(file)
            except TornFrameError:
                return
            if not chunk.events:
                return
        else:
            data = file.read(HEADER_BYTES)
            if len(data) < HEADER_BYTES:
                return
            header = frames.read_header(data)
            file.seek(header.length, os.SEEK_CUR)
            size = header.size
            chunk = Chunk([_at(header.last)], header.revision)
        yield offset, size, chunk
        offset += size


def _at(position: Position) -> Event:
    """A stand-in for the event at ``position``, of which recovery needs only the position."""
    return Event(position.revision, position.index, EventType.MARKER, Op.SNAPSHOT_END, b"")
