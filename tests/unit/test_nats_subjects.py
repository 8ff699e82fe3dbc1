"""Subjects of the NATS sink: which characters a key segment keeps, where each event goes, and
the stream filter that must capture every subject a template can give."""

import random

import pytest

from bridge.errors import SinkRejectedError
from bridge.events import Event, EventType, Op, SnapshotReason, snapshot_marker
from bridge.keytemplate import KeyTemplate
from config.keyspace import KeySpace
from sinks.nats.subjects import SubjectRouter, clean_segment, covers, stream_filter

KEYSPACE = KeySpace.of([b"/app/"])


def put(key: bytes, *, revision: int = 7) -> Event:
    return Event(revision=revision, index=0, type=EventType.PUT, op=Op.CREATE, key=key, value=b"v")


@pytest.mark.parametrize(
    ("segment", "token"),
    [
        (b"billing-v2_x", b"billing-v2_x"),
        (b"a.b", b"a_b"),
        (b"*", b"_"),
        (b">", b"_"),
        (b"with space\ttab", b"with_space_tab"),
        (b"$SYS", b"_SYS"),
        (b"50%", b"50_"),
        ("ключ".encode(), b"____"),
        (b"\xff\xfeok", b"__ok"),
    ],
)
def test_a_segment_keeps_letters_digits_dash_underscore(segment: bytes, token: bytes) -> None:
    assert clean_segment(segment) == token


def test_keys_route_by_segment_and_markers_to_the_blank_subject() -> None:
    router = SubjectRouter(KeyTemplate.parse("etcd.{1}.{2}"), keyspace=KEYSPACE)
    assert router.subject_for(put(b"/app/billing/limits/x")) == "etcd.billing.limits"
    assert router.subject_for(put(b"/app/v1.2/a b")) == "etcd.v1_2.a_b"
    assert router.subject_for(put(b"/app/loose")) == "etcd.loose._"
    marker = snapshot_marker(
        revision=9, index=0, op=Op.SNAPSHOT_BEGIN, prefix=b"/app/", reason=SnapshotReason.INITIAL
    )
    assert router.subject_for(marker) == router.marker_subject == "etcd._._"


def test_a_fixed_subject_takes_every_event() -> None:
    router = SubjectRouter(KeyTemplate.parse("config.changes"), keyspace=KEYSPACE)
    assert router.subject_for(put(b"/app/a/b")) == "config.changes"
    assert stream_filter(router.template) == "config.changes"


def test_every_rendered_subject_is_one_the_stream_filter_captures() -> None:
    template = KeyTemplate.parse("etcd.app-{1}.{2}x.{3}")
    pattern = stream_filter(template)
    assert pattern == "etcd.*.*.*"
    router = SubjectRouter(template, keyspace=KEYSPACE)
    chooser = random.Random(4)  # noqa: S311 - reproducible test data
    for _ in range(500):
        key = b"/app/" + chooser.randbytes(chooser.randrange(0, 30))
        subject = router.subject_for(put(key))
        assert covers(pattern, subject), (key, subject)
        assert all(token and token not in ("*", ">") for token in subject.split(".")), subject
        assert " " not in subject and subject.isascii()


def test_a_subject_too_long_to_publish_names_the_key_and_revision() -> None:
    router = SubjectRouter(KeyTemplate.parse("etcd.{1}"), keyspace=KEYSPACE)
    with pytest.raises(SinkRejectedError) as raised:
        router.subject_for(put(b"/app/" + b"x" * 1100, revision=42))
    message = str(raised.value)
    assert "/app/xxx" in message and "revision 42" in message
    assert "BRIDGE_NATS__SUBJECT" in message and "\n" not in message


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("etcd.*.*", "etcd.a.b", True),
        ("etcd.*.*", "etcd.*.*", True),
        ("etcd.>", "etcd.*.*", True),
        ("etcd.>", "etcd", False),
        (">", "etcd.a", True),
        ("etcd.*", "etcd.a.b", False),
        ("etcd.a.b", "etcd.a", False),
        ("etcd.a", "etcd.*", False),
        ("other.*", "etcd.a", False),
    ],
)
def test_covers(pattern: str, subject: str, expected: bool) -> None:
    assert covers(pattern, subject) is expected
