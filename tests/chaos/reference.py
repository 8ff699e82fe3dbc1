"""The reference a chaos run is checked against: etcd's own history of the prefix.

Nothing the test did is trusted as the reference: a lease expires when etcd decides, and an
operation cut off by a pause may or may not have landed. So the history is read back from
etcd, by a watch from revision 1 with ``prev_kv`` on the raw gRPC stream (no client library
in between), and turned into the events docs/events.md says a sink must hold.

A run that compacts etcd (``--sink-down``) reads the history in pieces (``Recorded``): each
compaction only drops revisions already read, so the check still gets the whole of it.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

from pyetcd import etcdrpc

from bridge.contract import Entry, History
from bridge.events import Event, EventType, Op
from config.keyspace import prefix_range
from tests.chaos.common import PREFIX, etcd_client
from tests.fixtures.etcd import EtcdServer, prefix_watch


class Recorded:
    """etcd's history of the prefix as far as read: what ``read_history`` gives, read on
    from where the last piece ended, so that etcd may compact whatever is already here."""

    def __init__(self, server: EtcdServer) -> None:
        self.server = server
        self.events: list[Event] = []
        self.compacted = 0
        """The revision of the latest compaction (0: none)."""

    @property
    def revision(self) -> int:
        """The last revision read whole (0: none)."""
        return self.events[-1].revision if self.events else 0

    def read(self, *, until: int) -> list[Event]:
        """Every change of the prefix up to ``until`` at least, from revision 1."""
        if until > self.revision:
            self.events += read_history(self.server, until=until, since=self.revision + 1)
        return self.events

    def latest_write(self) -> int:
        """The revision of the latest write to a key of the prefix that still stands (a
        change the history holds, unlike etcd's own revision, which other keys move on)."""
        start, end = prefix_range(PREFIX)
        latest = etcdrpc.RangeRequest(
            key=start,
            range_end=end,
            limit=1,
            keys_only=True,
            sort_order=etcdrpc.RangeRequest.DESCEND,
            sort_target=etcdrpc.RangeRequest.MOD,
        )
        with etcd_client(self.server, timeout=10) as client:
            return int(client.kvstub.Range(latest, timeout=10).kvs[0].mod_revision)

    def compact(self) -> int | None:
        """Read on up to the prefix's latest write, then compact etcd's history there (so
        only what is read goes); the revision compacted, or None when nothing was written
        since the last compaction."""
        revision = self.latest_write()
        if revision <= self.compacted:
            return None
        self.read(until=revision)
        with etcd_client(self.server, timeout=10) as client:
            client.compact(revision, physical=True)
        self.compacted = revision
        return revision


def read_history(
    server: EtcdServer, *, until: int, since: int = 1, timeout: float = 180
) -> list[Event]:
    """Every change of the prefix from revision ``since`` to ``until`` (or a little past it),
    as etcd reports it to a watch with ``prev_kv``, as the events a sink must hold (numbered
    within their revision: etcd sends a revision's events in one response, so a piece never
    ends inside one)."""
    events: list[Event] = []
    with (
        etcd_client(server, timeout=10) as client,
        prefix_watch(
            client.channel, prefix=PREFIX, start_revision=since, timeout=timeout
        ) as stream,
    ):
        for response in stream:
            if response.canceled:
                raise RuntimeError(f"etcd cancelled the history watch: {response.cancel_reason}")
            for raw in response.events:
                same = bool(events) and events[-1].revision == raw.kv.mod_revision
                events.append(_event(raw, index=events[-1].index + 1 if same else 0))
            if events and events[-1].revision >= until:
                break
    if not events or events[-1].revision < until:
        raise RuntimeError(f"etcd's history of the prefix ended before revision {until}")
    return events


def _event(raw: Any, *, index: int) -> Event:
    """One event of a watch response as a sink must hold it, ``index``-th of its revision."""
    kv = raw.kv
    revision = int(kv.mod_revision)
    is_put = raw.type == raw.PUT
    return Event(
        revision=revision,
        index=index,
        type=EventType.PUT if is_put else EventType.DELETE,
        op=(Op.CREATE if kv.version == 1 else Op.UPDATE) if is_put else Op.DELETE,
        key=bytes(kv.key),
        value=bytes(kv.value) if is_put else None,
        prev_value=bytes(raw.prev_kv.value) if raw.HasField("prev_kv") else None,
        mod_revision=revision,
        create_revision=int(kv.create_revision),
        version=int(kv.version),
        lease=int(kv.lease),
    )


def expected_after_snapshot(
    history: Sequence[Event], *, revision: int
) -> tuple[list[Event], list[Event]]:
    """What a sink whose snapshot was taken at ``revision`` must hold: (the snapshot's
    markers, its keys at etcd's state then plus every later change). The snapshot is the
    contract kit's ``History`` of that state, each key with its lease."""
    state = state_at(history, revision=revision)
    model = History(prefix=PREFIX, revision=revision)
    model.state = {
        key: Entry(event.value or b"", event.mod_revision, event.create_revision, event.version)
        for key, event in state.items()
    }
    snapshot = model.snapshot()
    markers = [event for event in snapshot if event.type is EventType.MARKER]
    keys = [
        dataclasses.replace(event, lease=state[event.key].lease)
        for event in snapshot
        if event.type is not EventType.MARKER
    ]
    return markers, keys + [event for event in history if event.revision > revision]


def state_at(history: Sequence[Event], *, revision: int) -> dict[bytes, Event]:
    """etcd's state of the prefix at ``revision``: per key, the change that wrote its value
    then (a delete leaves no key)."""
    state: dict[bytes, Event] = {}
    for event in history:
        if event.revision > revision:
            break
        if event.type is EventType.DELETE:
            state.pop(event.key, None)
        else:
            state[event.key] = event
    return state
