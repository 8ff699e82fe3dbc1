"""Several watched prefixes and key filters: normalization, membership, where a snapshot
resumes, and which keys a filtered snapshot numbers."""

from bridge.events import Op, SnapshotReason
from bridge.snapshot import SnapshotCursor, _ranges_after, read_snapshot
from config.keyspace import KeySpace, prefix_range
from tests.unit.doubles import ScriptedEtcd


def test_prefix_ranges() -> None:
    assert prefix_range(b"/a/") == (b"/a/", b"/a0")
    assert prefix_range(b"a\xff") == (b"a\xff", b"b")
    assert prefix_range(b"\xff\xff") == (b"\xff\xff", b"\0")
    assert prefix_range(b"") == (b"\0", b"\0")


def test_prefixes_are_sorted_and_nested_ones_dropped() -> None:
    keyspace = KeySpace.of([b"/c/", b"/a/x/", b"/a/", b"/c/"])
    assert keyspace.prefixes == (b"/a/", b"/c/")
    assert keyspace.describe() == b"/a/,/c/"
    assert keyspace.ranges == [(b"/a/", b"/a0"), (b"/c/", b"/c0")]
    assert keyspace.covering_range == (b"/a/", b"/c0")
    assert keyspace.needs_filter


def test_the_empty_prefix_means_everything() -> None:
    for keyspace in (KeySpace.of([]), KeySpace.of([b"/a/", b""])):
        assert keyspace.prefixes == ()
        assert keyspace.covering_range == (b"\0", b"\0")
        assert b"\xff anything" in keyspace
        assert not keyspace.needs_filter
        assert keyspace.describe() == b""


def test_membership_and_relative_keys() -> None:
    keyspace = KeySpace.of([b"/a/", b"/c/"])
    assert b"/a/1" in keyspace and b"/c/" in keyspace
    assert b"/b/1" not in keyspace and b"/a" not in keyspace
    assert keyspace.relative(b"/c/users/42") == b"users/42"
    assert keyspace.relative(b"/b/x") == b"/b/x"
    assert not KeySpace.of([b"/a/"]).needs_filter


def test_a_snapshot_resumes_after_its_last_key_across_prefixes() -> None:
    keyspace = KeySpace.of([b"/a/", b"/c/", b"/e/"])
    assert _ranges_after(keyspace, None) == keyspace.ranges
    assert _ranges_after(keyspace, b"/a/5") == [
        (b"/a/5\0", b"/a0"),
        (b"/c/", b"/c0"),
        (b"/e/", b"/e0"),
    ]
    assert _ranges_after(keyspace, b"/c/9") == [(b"/c/9\0", b"/c0"), (b"/e/", b"/e0")]
    # The last range stays, even with nothing left in it, so the end marker is written.
    assert _ranges_after(keyspace, b"/e/\xff") == [(b"/e/\xff\0", b"/e0")]
    assert _ranges_after(KeySpace.of([]), b"k") == [(b"k\0", b"\0")]


def test_include_and_exclude_patterns_judge_the_key_below_its_prefix() -> None:
    keyspace = KeySpace.of([b"/a/", b"/c/"], include=["users/*", "groups/?"], exclude=["*.tmp"])
    assert keyspace.filtered and keyspace.needs_filter
    assert b"/a/users/42" in keyspace and b"/c/users/x/y" in keyspace, "* crosses '/'"
    assert b"/c/groups/7" in keyspace and b"/c/groups/77" not in keyspace
    assert b"/a/users/42.tmp" not in keyspace, "exclude wins"
    assert b"/a/other" not in keyspace and b"/b/users/1" not in keyspace
    binary = KeySpace.of([b"/a/"], exclude=["bin/*"])
    assert b"/a/bin/\xff\x00" not in binary and b"/a/\xff" in binary, "binary keys match as bytes"
    single = KeySpace.of([b"/a/"], include=["x*"])
    assert single.needs_filter and b"/a/xy" in single and b"/a/yx" not in single
    assert not KeySpace.of([b"/a/"]).filtered


def test_a_filtered_snapshot_numbers_only_the_keys_it_streams() -> None:
    keys = [b"/p/%02d%s" % (n, b".tmp" if n % 3 == 0 else b"") for n in range(20)]
    etcd = ScriptedEtcd(revision=9, keys=keys)
    keyspace = KeySpace.of([b"/p/"], exclude=["*.tmp"])
    cursor = SnapshotCursor(reason=SnapshotReason.INITIAL)
    chunks = read_snapshot(etcd, keyspace=keyspace, cursor=cursor, page_bytes=64 * 1024)
    events = [event for chunk in chunks for event in chunk.events]
    streamed = [key for key in keys if not key.endswith(b".tmp")]
    assert [event.key for event in events if event.op is Op.SNAPSHOT] == streamed
    assert [event.index for event in events] == list(range(len(streamed) + 2))
    assert events[-2].closes_snapshot and not any(event.closes_snapshot for event in events[:-2])
    # Resuming after a streamed key gives the same positions as reading straight through.
    assert events[5].key == streamed[4]
    resumed = SnapshotCursor.resuming(events[5])
    rest = [
        event
        for chunk in read_snapshot(etcd, keyspace=keyspace, cursor=resumed, page_bytes=65536)
        for event in chunk.events
    ]
    assert [(event.key, event.index) for event in rest] == [
        (event.key, event.index) for event in events[6:]
    ]
