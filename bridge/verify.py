"""``etcd-bridge verify``: does each sink still agree with etcd?

For each selected sink (docs/verify.md has the operator's view):

1. Read back what it holds (``Sink.reader``). A stream is folded (``bridge.consumer.Fold``)
   into an sqlite store on disk, so memory stays flat whatever the prefix size, while
   ``drift.StreamCheck`` tallies repeated positions, gaps and a trimmed head on the way. The
   fold then rolls back an unfinished tail (inside a snapshot, or a revision whose last
   change said ``more``): R is the last revision the sink holds completely. A mirror
   (``StateReader``) gives its revision R and its keys directly.
2. Read etcd's state of the watched keys at R (``reference.state_at``: paged, key filters
   applied). If R is compacted, compare with etcd's compact revision C instead, the nearest
   revision etcd can vouch for, and say so: the sink holds nothing past R, so changes made
   between R and C cannot be told from drift there. If the sink holds a revision etcd has
   not reached, etcd was replaced or restored: that is reported as a difference.
3. Merge both sides in key order (etcd's pages; the store's ``ORDER BY key``) and print one
   summary line per sink. With ``--history FROM TO`` also compare etcd's changes in that
   range with the sink's, event by event (``drift.compare_history``).

Everything is read-only: readers never open a sink for writing and never move a position,
so verify runs safely beside a live bridge (a file being appended is read up to its size
when the read starts). The exit code is 0 only when every verifiable sink agrees; a sink
without a reader, or one that holds nothing yet, is reported on its own line and does not
fail the run. ``bridge.verify_service`` repeats rounds and exports them as metrics.
"""

import enum
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TextIO, TypeVar

from pydantic import BaseModel

from bridge import plugins
from bridge.app import Configuration
from bridge.consumer import Fold, KeyValue, SqliteStore
from bridge.drift import HistoryDiff, StateDiff, StreamCheck, compare_history, compare_states
from bridge.errors import BridgeError, RevisionCompactedError
from bridge.etcd import EtcdConnection
from bridge.events import Position
from bridge.reader import REVISION_FIELDS, NoReaderError, SinkReader, StateReader, StreamReader
from bridge.reference import changes_between, compacted_revision, state_at
from config.errors import ConfigError
from config.keyspace import KeySpace

T = TypeVar("T")

PROGRESS_EVERY_SECONDS = 5.0
_COMPACTION_RETRIES = 3


class Verdict(enum.StrEnum):
    """What verify concluded about one sink."""

    AGREE = "agree"
    DIFFER = "DIFFER"
    EMPTY = "holds nothing yet"
    NO_READER = "not verifiable"
    FAILED = "could not be verified"

    @property
    def fails_run(self) -> bool:
        return self in (Verdict.DIFFER, Verdict.FAILED)


@dataclass(frozen=True, slots=True)
class Options:
    """The command line: which sinks, and the history range if any."""

    sinks: tuple[str, ...] = ()
    """Sinks to verify (empty: every configured one)."""
    history: tuple[int, int] | None = None
    """``--history FROM TO``: revisions whose changes are compared event by event."""


@dataclass
class SinkReport:
    """One sink's outcome; ``lines`` is what the operator reads."""

    sink: str
    verdict: Verdict
    revision: int = 0
    """R: the last revision the sink holds completely."""
    compared_at: int = 0
    """The etcd revision compared with: R, or etcd's compact revision when R is compacted."""
    keys: StateDiff | None = None
    stream: StreamCheck | None = None
    history: HistoryDiff | None = None
    notes: list[str] = field(default_factory=list)

    def lines(self, *, history: tuple[int, int] | None = None) -> list[str]:
        if self.keys is None:
            return [f"{self.sink}: {self.verdict.value}" + "".join(f": {n}" for n in self.notes)]
        keys = self.keys
        at = "" if self.compared_at == self.revision else f" (etcd at {self.compared_at})"
        line = (
            f"{self.sink}: {self.verdict.value} at revision {self.revision}{at}: "
            f"{keys.compared} keys compared, {keys.missing.count} missing, "
            f"{keys.extra.count} extra, {keys.different.count} different"
        )
        details = [
            tally.describe(name)
            for name, tally in (
                ("missing", keys.missing),
                ("extra", keys.extra),
                ("different", keys.different),
            )
            if tally.count
        ]
        details += [] if self.stream is None else self.stream.describe()
        lines = ["; ".join([line, *details, *self.notes])]
        if self.history is not None and history is not None:
            lines.append(_history_line(self.sink, self.history, history))
        return lines


def _history_line(sink: str, diff: HistoryDiff, span: tuple[int, int]) -> str:
    verdict = "agree" if diff.agree else "DIFFER"
    line = (
        f"{sink}: history {span[0]}..{span[1]} {verdict}: {diff.compared} changes compared, "
        f"{diff.lost.count} lost, {diff.repeated.count} repeated, "
        f"{diff.unexpected.count} unexpected, {diff.different.count} different"
    )
    if diff.pending:
        line += f", {diff.pending} not delivered yet"
    tallies = (
        ("lost", diff.lost),
        ("repeated", diff.repeated),
        ("unexpected", diff.unexpected),
        ("different", diff.different),
    )
    return "; ".join([line, *(tally.describe(name) for name, tally in tallies if tally.count)])


class Progress:
    """A progress line on stderr every ``PROGRESS_EVERY_SECONDS`` while items go by, so a
    long run is not silent."""

    def __init__(
        self,
        sink: str,
        *,
        output: TextIO | None = None,
        every: float = PROGRESS_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``output``: where the lines go (None: stderr as it is when they are printed)."""
        self._sink, self._output, self._every, self._clock = sink, output, every, clock

    def count(self, items: Iterable[T], *, what: str) -> Iterator[T]:
        """``items``, unchanged, counted; the clock is read once per 1,024 of them."""
        started = logged = self._clock()
        number = 0
        for number, item in enumerate(items, start=1):  # noqa: B007 - read after the loop
            if number % 1024 == 0:
                now = self._clock()
                if now - logged >= self._every:
                    logged = now
                    rate = round(number / (now - started))
                    print(
                        f"verify {self._sink}: {number} {what} ({rate}/s)",
                        file=self._output or sys.stderr,
                        flush=True,
                    )
            yield item


def check_history_range(
    connection: EtcdConnection, *, keyspace: KeySpace, span: tuple[int, int]
) -> None:
    """ConfigError naming ``--history`` unless etcd still holds every revision of ``span``
    (a count-only range at FROM fails when FROM is compacted)."""
    first, last = span
    if not 0 < first <= last:
        raise ConfigError(f"--history: FROM ({first}) must be at least 1 and at most TO ({last})")
    current = connection.current_revision()
    if last > current:
        raise ConfigError(f"--history: TO ({last}) is past etcd's current revision {current}")
    start, end = keyspace.ranges[0]
    try:
        connection.count_keys(start=start, end=end, revision=first)
    except RevisionCompactedError:
        compacted = compacted_revision(connection, keyspace=keyspace, revision=first)
        raise ConfigError(
            f"--history: revision {first} is compacted (etcd keeps history from {compacted} on)"
        ) from None


def verify(configuration: Configuration, options: Options) -> list[SinkReport]:
    """One round: a report per selected sink (see the module docstring)."""
    selected = options.sinks or tuple(name for name, _section in configuration.sinks)
    sections = dict(configuration.sinks)
    connection = EtcdConnection(configuration.settings.etcd)
    try:
        try:
            connection.connect()
            if options.history is not None:
                keyspace = configuration.settings.etcd.keyspace
                check_history_range(connection, keyspace=keyspace, span=options.history)
        except BridgeError as error:
            return [SinkReport(name, Verdict.FAILED, notes=[str(error)]) for name in selected]
        return [
            _verify_sink(name, sections[name], configuration, connection, options)
            for name in selected
        ]
    finally:
        connection.close()


def _verify_sink(
    name: str,
    section: BaseModel,
    configuration: Configuration,
    connection: EtcdConnection,
    options: Options,
) -> SinkReport:
    try:
        reader = plugins.build_reader(name, section, **configuration.surroundings)
    except NoReaderError as error:
        return SinkReport(name, Verdict.NO_READER, notes=[str(error)])
    progress = Progress(name)
    try:
        with reader:
            return _verify_reader(name, reader, configuration, connection, options, progress)
    except (BridgeError, ConfigError) as error:
        return SinkReport(name, Verdict.FAILED, notes=[str(error)])


def _verify_reader(
    name: str,
    reader: SinkReader,
    configuration: Configuration,
    connection: EtcdConnection,
    options: Options,
    progress: Progress,
) -> SinkReport:
    if isinstance(reader, StreamReader):
        store = SqliteStore()
        try:
            report, items = _fold_stream(name, reader, store, progress)
            if report.verdict is Verdict.EMPTY:
                return report
            _compare(report, items, configuration, connection, progress)
            if options.history is not None:
                report.history = _compare_history(
                    reader, configuration, connection, span=options.history
                )
        finally:
            store.close()
    elif isinstance(reader, StateReader):
        report = SinkReport(name, Verdict.AGREE, revision=reader.revision())
        if report.revision == 0:
            return SinkReport(name, Verdict.EMPTY, notes=["the mirror holds no revision"])
        _compare(
            report,
            lambda: (KeyValue.of(event) for event in reader.items()),
            configuration,
            connection,
            progress,
            kept=reader.kept,
        )
        left_out = [name for name in REVISION_FIELDS if name not in reader.kept]
        if left_out:
            report.notes.append(f"the mirror keeps no {', '.join(left_out)}: not compared")
        if options.history is not None:
            report.notes.append("--history: a mirror keeps a state, not the changes")
    else:
        raise ConfigError(f"the {name} sink's reader is neither a stream nor a state")
    agrees = report.keys is not None and report.keys.agree
    clean = report.stream is None or report.stream.clean
    history_agrees = report.history is None or report.history.agree
    if not (agrees and clean and history_agrees) or report.verdict is Verdict.DIFFER:
        report.verdict = Verdict.DIFFER
    return report


def _fold_stream(
    name: str, reader: StreamReader, store: SqliteStore, progress: Progress
) -> tuple[SinkReport, Callable[[], Iterator[KeyValue]]]:
    """Fold the whole stream, then roll back to its last whole revision."""
    fold, check = Fold(store), StreamCheck()
    fold.apply_all(progress.count(check.watch(reader.events()), what="events read"))
    report = SinkReport(name, Verdict.AGREE, revision=fold.revision, stream=check)
    if not fold.whole and fold.position is not None:
        inside = "a snapshot" if fold.in_snapshot else "a revision"
        report.notes.append(
            f"ends inside {inside} at {fold.position}: compared up to the last whole revision"
        )
        fold.rollback()
    if fold.whole_position is None:
        report.verdict = Verdict.EMPTY
        if check.events:
            report.notes.insert(0, "no whole revision yet (its first snapshot is not finished)")
    return report, store.items


def _compare(
    report: SinkReport,
    items: Callable[[], Iterator[KeyValue]],
    configuration: Configuration,
    connection: EtcdConnection,
    progress: Progress,
    *,
    kept: Collection[str] = REVISION_FIELDS,
) -> None:
    """Compare the sink's state at ``report.revision`` with etcd's, at the nearest revision
    etcd holds (see the module docstring), on the revision fields the sink ``kept``; fills
    ``report``."""
    settings = configuration.settings
    keyspace = settings.etcd.keyspace
    current = connection.current_revision()
    at = report.revision
    if at > current:
        report.verdict = Verdict.DIFFER
        report.notes.append(
            f"the sink holds revision {at}, newer than etcd's current {current}: etcd was "
            "replaced or restored from a backup"
        )
        at = current
    for _attempt in range(_COMPACTION_RETRIES):
        try:
            etcd_items = state_at(
                connection,
                keyspace=keyspace,
                revision=at,
                page_bytes=settings.etcd.snapshot_page_bytes,
            )
            report.keys = compare_states(
                progress.count(etcd_items, what="etcd keys compared"),
                items(),
                values=settings.values,
                kept=kept,
            )
            report.compared_at = at
            break
        except RevisionCompactedError:
            at = max(at + 1, compacted_revision(connection, keyspace=keyspace, revision=at))
    else:
        raise BridgeError(f"etcd compacts faster than verify reads it (at revision {at})")
    if report.compared_at > report.revision:
        report.notes.append(
            f"revision {report.revision} is compacted in etcd: compared with its compact "
            f"revision {report.compared_at}, so changes made between the two cannot be told "
            "from drift"
        )


def _compare_history(
    reader: StreamReader,
    configuration: Configuration,
    connection: EtcdConnection,
    *,
    span: tuple[int, int],
) -> HistoryDiff:
    first, last = span
    settings = configuration.settings
    etcd = changes_between(connection, keyspace=settings.etcd.keyspace, first=first, last=last)
    held = reader.events(after=Position(first, -1))
    return compare_history(etcd, held, last=last, values=settings.values)


def print_reports(
    reports: list[SinkReport], *, options: Options, output: TextIO | None = None
) -> int:
    """Print every report's lines (``output``: None for stdout); the exit code: 1 if any
    sink differs or failed, else 0."""
    for report in reports:
        for line in report.lines(history=options.history):
            print(line, file=output or sys.stdout, flush=True)
    return 1 if any(report.verdict.fails_run for report in reports) else 0
