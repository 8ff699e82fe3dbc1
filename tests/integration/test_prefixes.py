"""Several watched prefixes, and key filters, streamed as one, against a real etcd.

The keys between and around the prefixes (and the keys the filters leave out) are written
too, in the same transactions as watched ones, so a bridge that watched the covering range
without filtering, or that numbered events before filtering, fails here.
"""

from pathlib import Path

import pytest

from bridge.events import Op
from tests.fixtures.bridge import BridgeFactory, read_events
from tests.fixtures.etcd import ETCD_VERSIONS, EtcdFactory, EtcdServer
from tests.fixtures.processes import wait_for
from tests.history import load_keys, put_all
from tests.integration.test_pipeline_file import file_bridge, wait_for_revision

VALUE = b"v" * 100


def last_line(path: Path) -> bytes:
    """The last complete line of ``path`` (cheap to poll while the file grows)."""
    with open(path, "rb") as output:
        output.seek(0, 2)
        output.seek(max(0, output.tell() - 4096))
        tail = output.read()
    complete = tail[: tail.rfind(b"\n")]  # without a line still being written
    return complete.rsplit(b"\n", 1)[-1]


@pytest.mark.parametrize("version", ETCD_VERSIONS)
def test_several_prefixes_are_one_ordered_stream(
    etcd_factory: EtcdFactory, bridge_factory: BridgeFactory, tmp_path: Path, version: str
) -> None:
    etcd = etcd_factory.start(version=version)
    prefix = "/multi/"
    a, b, c, d = (f"{prefix}{name}/" for name in "abcd")
    output = tmp_path / "events.jsonl"
    with etcd.client() as client:
        for each in (a, b, c, d):
            load_keys(client, prefix=each, count=1200, value=VALUE)
        bridge = bridge_factory.start(
            **file_bridge(
                bridge_factory,
                etcd,
                prefix=f"{c},{a},{a}000001",  # unsorted, and one prefix inside another
                path=output,
                BRIDGE_ETCD__SNAPSHOT_PAGE_BYTES=str(64 * 1024),  # several pages per prefix
            )
        )
        wait_for(lambda: b"snapshot_end" in last_line(output), timeout=30, what="the snapshot")
        mixed = put_all(
            client,
            [
                (f"{b}new".encode(), b"between"),
                (f"{c}new".encode(), b"1"),
                (f"{d}new".encode(), b"after"),
                (f"{a}new".encode(), b"2"),
            ],
        )
        put_all(client, [(f"{b}only".encode(), b"nothing watched")])
        client.delete(f"{c}000007")
        last = put_all(client, [(f"{a}last".encode(), b"3")])
        wait_for_revision(output, last)
    assert bridge.terminate() == 0
    events = read_events(output)
    snapshot = events[: 1 + 2400 + 1]
    assert snapshot[0].op is Op.SNAPSHOT_BEGIN and snapshot[-1].op is Op.SNAPSHOT_END
    assert snapshot[0].key == f"{a},{c}".encode()
    assert [event.index for event in snapshot] == list(range(len(snapshot)))
    assert [event.key for event in snapshot[1:-1]] == [
        f"{each}{number:06d}".encode() for each in (a, c) for number in range(1200)
    ]
    live = [(event.revision, event.index, event.op, event.key) for event in events[len(snapshot) :]]
    assert live == [
        (mixed, 0, Op.CREATE, f"{c}new".encode()),
        (mixed, 1, Op.CREATE, f"{a}new".encode()),
        (last - 1, 0, Op.DELETE, f"{c}000007".encode()),
        (last, 0, Op.CREATE, f"{a}last".encode()),
    ]


def test_kill_9_in_the_second_prefix_of_a_snapshot_resumes_there(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    a, b, c = (f"{prefix}{name}/" for name in "abc")
    output = tmp_path / "events.jsonl"
    keys = 30000
    with etcd.client() as client:
        for each in (a, b, c):
            load_keys(client, prefix=each, count=keys if each == c else 2000, value=VALUE)
    settings = file_bridge(
        bridge_factory,
        etcd,
        prefix=f"{a},{c}",
        path=output,
        BRIDGE_ETCD__SNAPSHOT_PAGE_BYTES=str(64 * 1024),
        BRIDGE_PUMP__BATCH_EVENTS="100",
        BRIDGE_FILE__FSYNC="false",
    )
    bridge = bridge_factory.start(**settings)
    wait_for(lambda: c.encode() in last_line(output), timeout=30, what="the second prefix")
    bridge.kill()
    partial = read_events(output)
    assert partial[-1].op is not Op.SNAPSHOT_END, "snapshot finished before the kill; grow it"
    bridge = bridge_factory.start(**settings)
    wait_for(lambda: b"snapshot_end" in last_line(output), timeout=30, what="the snapshot end")
    assert bridge.terminate() == 0
    events = read_events(output)
    assert [event.index for event in events] == list(range(2000 + keys + 2))
    assert [event.key for event in events[1:-1]] == [
        f"{each}{number:06d}".encode()
        for each, count in ((a, 2000), (c, keys))
        for number in range(count)
    ]
    assert len({event.revision for event in events}) == 1


def test_key_filters_drop_keys_before_numbering_in_snapshot_and_watch_across_kill_9(
    etcd: EtcdServer, bridge_factory: BridgeFactory, prefix: str, tmp_path: Path
) -> None:
    """Only ``apps/*`` keys that are not ``*.tmp`` are streamed; a kill in the middle of the
    snapshot resumes with the same indexes, and a transaction mixing streamed and filtered
    keys numbers only the streamed ones."""
    output = tmp_path / "events.jsonl"
    streamed = [f"{prefix}apps/{n:06d}".encode() for n in range(20000)]
    with etcd.client() as client:
        load_keys(client, prefix=f"{prefix}apps/", count=20000, value=VALUE)
        load_keys(client, prefix=f"{prefix}other/", count=3000, value=VALUE)
        for start in range(0, 20000, 700):  # 100 per transaction, interleaved with streamed
            put_all(
                client,
                [
                    (f"{prefix}apps/{n:06d}.tmp".encode(), b"t")
                    for n in range(start, start + 700, 7)
                ],
            )
    settings = file_bridge(
        bridge_factory,
        etcd,
        prefix=prefix,
        path=output,
        BRIDGE_ETCD__INCLUDE="apps/*",
        BRIDGE_ETCD__EXCLUDE="*.tmp",
        BRIDGE_ETCD__SNAPSHOT_PAGE_BYTES=str(64 * 1024),
        BRIDGE_PUMP__BATCH_EVENTS="100",
        BRIDGE_FILE__FSYNC="false",
    )
    bridge = bridge_factory.start(**settings)
    wait_for(lambda: b"apps/01" in last_line(output), timeout=30, what="half the snapshot")
    bridge.kill()
    assert read_events(output)[-1].op is not Op.SNAPSHOT_END, "snapshot done before the kill"
    bridge = bridge_factory.start(**settings)
    wait_for(lambda: b"snapshot_end" in last_line(output), timeout=30, what="the snapshot end")
    with etcd.client() as client:
        mixed = put_all(
            client,
            [
                (f"{prefix}apps/a.tmp".encode(), b"left out"),
                (f"{prefix}apps/new".encode(), b"1"),
                (f"{prefix}other/new".encode(), b"left out"),
                (f"{prefix}apps/newer".encode(), b"2"),
            ],
        )
        only_filtered = put_all(client, [(f"{prefix}other/x".encode(), b"nothing streamed")])
        last = put_all(client, [(f"{prefix}apps/last".encode(), b"3")])
        wait_for_revision(output, last)
    assert bridge.terminate() == 0
    events = read_events(output)
    snapshot = events[: len(streamed) + 2]
    assert [event.index for event in snapshot] == list(range(len(streamed) + 2))
    assert [event.key for event in snapshot[1:-1]] == streamed
    live = [
        (event.revision, event.index, event.key, event.more) for event in events[len(snapshot) :]
    ]
    assert live == [
        (mixed, 0, f"{prefix}apps/new".encode(), True),
        (mixed, 1, f"{prefix}apps/newer".encode(), False),
        (last, 0, f"{prefix}apps/last".encode(), False),
    ]
    assert only_filtered not in {event.revision for event in events}
