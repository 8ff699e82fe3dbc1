"""Several watched prefixes: normalization, membership, and where a snapshot resumes."""

from bridge.snapshot import _ranges_after
from config.keyspace import KeySpace, prefix_range


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
