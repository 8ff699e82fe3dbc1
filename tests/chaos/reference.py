"""The reference a chaos run is checked against: etcd's own history of the prefix.

Nothing the test did is trusted as the reference: a lease expires when etcd decides, and an
operation cut off by a pause may or may not have landed. So the history is read back from
etcd, by a watch from revision 1 with ``prev_kv`` on the raw gRPC stream (no client library
in between), and turned into the events docs/events.md says a sink must hold.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

from bridge.contract import Entry, History
from bridge.events import Event, EventType, Op
from tests.chaos.common import PREFIX, etcd_client
from tests.fixtures.etcd import EtcdServer, prefix_watch


def read_history(server: EtcdServer, *, until: int, timeout: float = 180) -> list[Event]:
    """Every change of the prefix from revision 1 to ``until``, as etcd reports it to a watch
    with ``prev_kv``, as the events a sink must hold (numbered within their revision)."""
    events: list[Event] = []
    with (
        etcd_client(server, timeout=10) as client,
        prefix_watch(client.channel, prefix=PREFIX, start_revision=1, timeout=timeout) as stream,
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
    state: dict[bytes, Event] = {}
    for event in history:
        if event.revision > revision:
            break
        if event.type is EventType.DELETE:
            state.pop(event.key, None)
        else:
            state[event.key] = event
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
