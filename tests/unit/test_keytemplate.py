"""The one template language that routes a key to a destination by its segments."""

import pytest

from bridge.keytemplate import KeyTemplate
from config.keyspace import KeySpace


def test_a_plain_name_is_not_routed() -> None:
    template = KeyTemplate.parse("etcd:events")
    assert not template.routed
    assert template.name == b"etcd:events"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (b"/app/users/42", b"etcd:users"),
        (b"/app/users", b"etcd:users"),
        (b"/app//x", b"etcd:x"),
        (b"/app/", b"etcd:_"),
        (b"/app/\xffbin/1", b"etcd:\xffbin"),
    ],
)
def test_first_segment_after_the_prefix(key: bytes, expected: bytes) -> None:
    keyspace = KeySpace.of([b"/app/", b"/svc/"])
    assert KeyTemplate.parse("etcd:{1}").render(key, keyspace=keyspace) == expected
    other = b"/svc/" + key.removeprefix(b"/app/")
    assert KeyTemplate.parse("etcd:{1}").render(other, keyspace=keyspace) == expected


def test_several_segments_missing_ones_and_literal_braces() -> None:
    template = KeyTemplate.parse("{{x}}:{1}/{3}")
    keyspace = KeySpace.of([b"p/"])
    assert template.routed
    assert template.render(b"p/a/b/c", keyspace=keyspace) == b"{x}:a/c"
    assert template.render(b"p/a", keyspace=keyspace) == b"{x}:a/_"


def test_a_sink_cleans_segments_its_own_way() -> None:
    template = KeyTemplate.parse("etcd.{1}.{2}")
    keyspace = KeySpace.of([b"/r/"])
    assert template.segments(b"/r/a b/c/d", keyspace=keyspace) == (b"a b", b"c")
    cleaned = template.render(b"/r/a b/", keyspace=keyspace, clean=lambda s: s.replace(b" ", b""))
    assert cleaned == b"etcd.ab._"
    assert template.fill(()) == b"etcd._._"


@pytest.mark.parametrize("bad", ["etcd:{0}", "etcd:{key}", "etcd:{1", "etcd:}", "", "{10}"])
def test_malformed_templates_say_what_is_wrong(bad: str) -> None:
    with pytest.raises(ValueError, match=r"use \{1\} to \{9\}|empty"):
        KeyTemplate.parse(bad)
