"""Finding and naming differences between what a sink holds and what etcd holds.

Three checks, each streaming, so memory does not grow with the prefix or the stream:

- ``compare_states``: two states in key order (etcd's pages at a revision, a folded sink's
  store read by key), merged like a sorted join: keys only in etcd are *missing*, keys only
  in the sink are *extra*, keys in both whose value, revisions, version or lease disagree
  are *different*.
- ``StreamCheck``: a sink's events in the order it holds them: a position at or below one
  before it is *repeated* (a duplicate, or out of order), an index that does not follow on
  is a *gap* (a record lost inside a revision, or the rest of a revision whose last change
  said ``more``), and a stream that does not open with a snapshot was *trimmed* (its head is
  gone, so the state it folds to lacks the keys set before).
- ``compare_history``: etcd's changes between two revisions and the changes a sink holds
  in that range, both in position order, merged by position: a change only etcd has is
  *lost* (or *pending*, when the sink simply holds nothing that late yet), one only the sink
  has is *unexpected*, one at or below a position before it is *repeated*, one whose type,
  key, values or revisions disagree is *different*.
- ``same_value``: with ``BRIDGE_VALUES=json`` a value embedded as JSON comes back
  re-serialized, so equal meaning counts as equal.

Each kind is a ``Tally``: a count and the first few examples, with keys shown safely (a key
that is not printable UTF-8 is escaped), for a summary line an operator can act on.
"""

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field

import orjson

from bridge.consumer import KeyValue
from bridge.events import SNAPSHOT_OPS, Event, Op
from bridge.reader import REVISION_FIELDS
from config.output import ValuesMode

EXAMPLES = 3
"""Examples kept per kind of difference."""

_CHANGE_FIELDS = ("type", "op", "key", *REVISION_FIELDS)


def shown_key(key: bytes, *, limit: int = 80) -> str:
    """A key fit for a one-line summary: printable UTF-8 as it is, anything else escaped."""
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        text = repr(key)
    else:
        if not text.isprintable():
            text = repr(key)
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class Tally:
    """How many of one kind of difference, and the first ``EXAMPLES`` of them."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(example)

    def describe(self, name: str) -> str:
        """``name: first, second, third (+N more)``, for a summary line."""
        more = self.count - len(self.examples)
        return f"{name}: {', '.join(self.examples)}" + (f" (+{more} more)" if more else "")


def same_value(left: bytes | None, right: bytes | None, *, values: ValuesMode) -> bool:
    """Whether two values are the same, as the sink's ``BRIDGE_VALUES`` keeps them."""
    if left == right:
        return True
    if values is not ValuesMode.JSON or left is None or right is None:
        return False
    try:
        return bool(orjson.loads(left) == orjson.loads(right))
    except orjson.JSONDecodeError:
        return False


@dataclass
class StateDiff:
    """The outcome of ``compare_states``."""

    compared: int = 0
    """Keys looked at: in etcd, in the sink, or both."""
    missing: Tally = field(default_factory=Tally)
    extra: Tally = field(default_factory=Tally)
    different: Tally = field(default_factory=Tally)

    @property
    def agree(self) -> bool:
        return not (self.missing.count or self.extra.count or self.different.count)


def compare_states(
    etcd: Iterable[KeyValue],
    sink: Iterable[KeyValue],
    *,
    values: ValuesMode,
    kept: Collection[str] = REVISION_FIELDS,
    diff: StateDiff | None = None,
) -> StateDiff:
    """Merge two key-ordered states, comparing values and the revision fields the sink
    ``kept``; ``diff`` collects the outcome (a fresh one if None) and may be watched for
    progress while this runs."""
    diff = StateDiff() if diff is None else diff
    etcd_items, sink_items = iter(etcd), iter(sink)
    want, have = next(etcd_items, None), next(sink_items, None)
    while want is not None or have is not None:
        diff.compared += 1
        if have is None or (want is not None and want.key < have.key):
            assert want is not None  # noqa: S101 - the loop condition says so
            diff.missing.add(shown_key(want.key))
            want = next(etcd_items, None)
        elif want is None or have.key < want.key:
            diff.extra.add(shown_key(have.key))
            have = next(sink_items, None)
        else:
            fields = _differing(want, have, values=values, kept=kept)
            if fields:
                diff.different.add(f"{shown_key(want.key)} ({','.join(fields)})")
            want, have = next(etcd_items, None), next(sink_items, None)
    return diff


def _differing(
    want: KeyValue, have: KeyValue, *, values: ValuesMode, kept: Collection[str]
) -> list[str]:
    value = [] if same_value(want.value, have.value, values=values) else ["value"]
    return value + [
        name
        for name in REVISION_FIELDS
        if name in kept and getattr(want, name) != getattr(have, name)
    ]


@dataclass
class HistoryDiff:
    """The outcome of ``compare_history``."""

    compared: int = 0
    """etcd's changes looked at."""
    pending: int = 0
    """etcd's changes after the last one the sink holds: not delivered yet, not lost."""
    lost: Tally = field(default_factory=Tally)
    unexpected: Tally = field(default_factory=Tally)
    repeated: Tally = field(default_factory=Tally)
    different: Tally = field(default_factory=Tally)

    @property
    def agree(self) -> bool:
        tallies = (self.lost, self.unexpected, self.repeated, self.different)
        return not any(tally.count for tally in tallies)


def compare_history(
    etcd: Iterable[Event], sink: Iterable[Event], *, last: int, values: ValuesMode
) -> HistoryDiff:
    """Merge etcd's changes up to revision ``last`` with the sink's events from the same
    first revision on; the sink's snapshot frames are skipped (they are not changes), and
    its events past ``last`` only say that it went past it (so what it lacks is lost, not
    pending)."""
    diff = HistoryDiff()
    changes = (event for event in sink if event.op not in SNAPSHOT_OPS)
    etcd_changes = iter(etcd)
    want, have = next(etcd_changes, None), next(changes, None)
    beyond = have is not None and have.revision > last
    previous = None
    while want is not None or (have is not None and not beyond):
        if have is not None and not beyond and previous is not None and have.position <= previous:
            diff.repeated.add(f"{have.position} after {previous}")
        elif have is None or beyond or (want is not None and want.position < have.position):
            assert want is not None  # noqa: S101 - the loop condition says so
            diff.compared += 1
            if have is None:
                diff.pending += 1
            else:
                diff.lost.add(f"{want.position} {shown_key(want.key)}")
            want = next(etcd_changes, None)
            continue
        elif want is None or have.position < want.position:
            diff.unexpected.add(f"{have.position} {shown_key(have.key)}")
            previous = have.position
        else:
            diff.compared += 1
            fields = _changed(want, have, values=values)
            if fields:
                diff.different.add(f"{want.position} {shown_key(want.key)} ({','.join(fields)})")
            previous = have.position
            want = next(etcd_changes, None)
        have = next(changes, None)
        beyond = have is not None and have.revision > last
    return diff


def _changed(want: Event, have: Event, *, values: ValuesMode) -> list[str]:
    differing = [name for name in _CHANGE_FIELDS if getattr(want, name) != getattr(have, name)]
    for name in ("value", "prev_value"):
        if not same_value(getattr(want, name), getattr(have, name), values=values):
            differing.append(name)
    return differing


@dataclass
class StreamCheck:
    """Watches a sink's events go by (``watch``) and tallies what breaks the stream's rules
    (see the module docstring)."""

    repeated: Tally = field(default_factory=Tally)
    gaps: Tally = field(default_factory=Tally)
    trimmed: str | None = None
    """Where the stream starts, when it does not start with a snapshot."""
    events: int = 0
    """Events seen, repeated ones included."""
    last: Event | None = None

    @property
    def clean(self) -> bool:
        return not (self.repeated.count or self.gaps.count or self.trimmed)

    def watch(self, events: Iterable[Event]) -> Iterator[Event]:
        """``events``, unchanged, tallied as they pass."""
        for event in events:
            self.see(event)
            yield event

    def see(self, event: Event) -> None:
        self.events += 1
        last = self.last
        if last is None:
            if event.op is not Op.SNAPSHOT_BEGIN:
                self.trimmed = str(event.position)
            self.last = event
            return
        position, previous = event.position, last.position
        if position <= previous:
            self.repeated.add(f"{position} after {previous}")
            return
        if event.revision == last.revision:
            follows = event.index == last.index + 1
        else:
            follows = event.index == 0 and not last.more
        if not follows:
            self.gaps.add(f"{previous} -> {position}")
        self.last = event

    def describe(self) -> list[str]:
        """The stream's problems, one phrase each."""
        problems = []
        if self.trimmed is not None:
            problems.append(f"trimmed: starts at {self.trimmed} without a snapshot")
        if self.repeated.count:
            problems.append(f"{self.repeated.count} {self.repeated.describe('repeated')}")
        if self.gaps.count:
            problems.append(f"{self.gaps.count} {self.gaps.describe('gaps')}")
        return problems
